-- Scheduled runs (SPEC section 6): every window of `facematch schedule` is claimed by inserting its
-- key, so two schedulers on the same database never run the same window.
CREATE TABLE schedule_windows (
    window_key   text PRIMARY KEY,
    scheduler    text NOT NULL,
    run_id       bigint REFERENCES job_runs (id),
    histories    integer,
    status       text NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'FINISHED', 'ERROR')),
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
