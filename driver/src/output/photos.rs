//! What the photo commands print: faces added, build reports, encoded photos.

use super::short_uri;
use crate::photos::add::AddedFace;
use crate::photos::build::BuildReport;
use crate::photos::encode::ImageOut;

/// Faces added by `faces add`.
pub fn added_faces(faces: &[AddedFace]) -> String {
    let mut out = String::new();
    for f in faces {
        let bbox = f
            .bbox
            .as_ref()
            .map(|b| format!(" box {b:?}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "face {} ({}){bbox} from {}{}\n",
            f.face_id,
            f.source,
            f.image,
            if f.known {
                " — photo already known, not encoded again".to_string()
            } else {
                format!(" — stored at {}", short_uri(&f.image_uri))
            }
        ));
    }
    out
}

/// What a dataset build did, with the photos that failed (up to the report's bound).
pub fn build(r: &BuildReport) -> String {
    let mut out = format!(
        "build {}: {} photo(s): {} encoded ({} faces), {} already known, {} duplicate(s), {} failed — {:.1} s ({:.1} s encoding on {} worker(s))\n",
        r.build_id,
        r.photos,
        r.encoded,
        r.faces,
        r.known,
        r.duplicates,
        r.failed,
        r.total_secs,
        r.dataflow_secs,
        r.workers
    );
    if let Some(line) = time_spent(r) {
        out.push_str(&line);
    }
    match &r.dataset {
        Some(label) => out.push_str(&format!("new version {label}\n")),
        None => out.push_str("no new faces: no new version\n"),
    }
    if r.failures.len() < r.failed {
        out.push_str(&format!(
            "failed photos (the first {} of {}; every one is in build_failures, build_id = {}):\n",
            r.failures.len(),
            r.failed,
            r.build_id
        ));
    } else if !r.failures.is_empty() {
        out.push_str("failed photos:\n");
        for f in &r.failures {
            out.push_str(&format!("  [{}] {}\n", f.stage, short_uri(&f.message)));
        }
    }
    out
}

/// Where the workers' time went, as shares of their busy time, and the driver's registering:
/// `time: encode 61%, detect_hog 30%, … of 12.3 worker-s; registering 0.4 s`.
fn time_spent(r: &BuildReport) -> Option<String> {
    let total = r.stage_secs.total();
    if total <= 0.0 {
        return None;
    }
    let mut stages = r.stage_secs.named().to_vec();
    stages.retain(|(_, secs)| *secs > 0.0);
    stages.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shares: Vec<String> = stages
        .iter()
        .map(|(name, secs)| format!("{name} {:.0}%", 100.0 * secs / total))
        .collect();
    Some(format!(
        "time: {} of {total:.1} worker-s; registering {:.1} s\n",
        shares.join(", "),
        r.register_secs
    ))
}

/// One encoded photo: its size, then a line per face with its box and the encoding's head.
pub fn encoded(out: &ImageOut) -> String {
    if out.error.is_some() {
        return String::new();
    }
    let mut text = format!(
        "{} ({}×{}): {} face(s)\n",
        out.image,
        out.width,
        out.height,
        out.faces.len()
    );
    for (i, face) in out.faces.iter().enumerate() {
        let [top, right, bottom, left] = face.top_right_bottom_left;
        let head: Vec<String> = face
            .encoding
            .iter()
            .take(4)
            .map(|v| format!("{v:.4}"))
            .collect();
        text.push_str(&format!(
            "  face {}: left {left}, top {top}, right {right}, bottom {bottom}; encoding [{}, …] ({} values)\n",
            i + 1,
            head.join(", "),
            face.encoding.len()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::photos::build::PhotoFailure;

    fn report(failed: usize, listed: usize) -> BuildReport {
        BuildReport {
            build_id: 7,
            photos: failed + 3,
            encoded: 3,
            faces: 5,
            known: 0,
            duplicates: 0,
            failed,
            failures: (0..listed)
                .map(|i| PhotoFailure {
                    image: format!("/photos/{i}.jpg"),
                    sha256: None,
                    stage: "no_face".into(),
                    message: format!("/photos/{i}.jpg: no face found"),
                })
                .collect(),
            dataset: Some("people@v1".into()),
            runner: "inline".into(),
            workers: 1,
            resumed: false,
            chunks_reused: 0,
            photos_encoded_now: 3,
            dataflow_secs: 1.0,
            stage_secs: Default::default(),
            register_secs: 0.1,
            total_secs: 1.2,
        }
    }

    #[test]
    fn a_report_of_more_failures_than_it_lists_says_where_the_rest_are() {
        let text = build(&report(5000, 2));
        assert!(text.contains("3 encoded (5 faces)"), "{text}");
        assert!(text.contains("5000 failed"), "{text}");
        assert!(
            text.contains("the first 2 of 5000; every one is in build_failures, build_id = 7"),
            "{text}"
        );
        let all = build(&report(2, 2));
        assert!(all.contains("failed photos:\n"), "{all}");
        assert_eq!(all.matches("no face found").count(), 2, "{all}");
    }
}
