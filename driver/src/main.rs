//! The `facematch` binary: logging, then the command line of [`facematch_driver::commands`].

/// Large blocks on huge pages ([`facematch_driver::alloc`]).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: facematch_driver::alloc::HugePages = facematch_driver::alloc::HugePages;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    facematch_driver::commands::main()
}
