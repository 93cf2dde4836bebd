-- Where a remote run ran (SPEC section 6): the EMR step running process 0, the last states seen
-- while polling, and whether the run started the cluster itself (and so terminated it).
ALTER TABLE job_runs
    ADD COLUMN step_id               text,
    ADD COLUMN cluster_state         text,
    ADD COLUMN step_state            text,
    ADD COLUMN cluster_started_here  boolean;
