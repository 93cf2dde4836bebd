-- facematch schema (SPEC section 2). Postgres is the system of record and the integration contract:
-- applications insert PENDING histories and read history_items with plain SQL.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE actors (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    gender      text CHECK (gender IN ('M', 'F')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE datasets (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    root_uri        text NOT NULL,
    manifest_uri    text NOT NULL,
    dim             integer NOT NULL CHECK (dim >= 1),
    face_count      bigint NOT NULL,
    shard_count     integer NOT NULL,
    embedder        text NOT NULL,
    manifest_sha256 text NOT NULL,
    is_current      boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
-- At most one dataset version is the default for runs.
CREATE UNIQUE INDEX datasets_one_current ON datasets ((true)) WHERE is_current;

-- User faces added later start at 120000, as in the old system; imported ids are kept as given.
CREATE SEQUENCE faces_user_id_seq START 120000;

CREATE TABLE faces (
    id                bigint PRIMARY KEY,
    source            text NOT NULL CHECK (source IN ('A', 'U')),
    actor_id          bigint REFERENCES actors (id),
    user_id           bigint REFERENCES users (id),
    image_uri         text,
    image_sha256      text,
    bbox              integer[] CHECK (bbox IS NULL OR cardinality(bbox) = 4),
    encoding          real[] NOT NULL,
    dim               integer NOT NULL CHECK (dim = cardinality(encoding)),
    first_dataset_id  bigint REFERENCES datasets (id),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX faces_image_sha256 ON faces (image_sha256);

CREATE TABLE job_runs (
    id              bigserial PRIMARY KEY,
    runner          text NOT NULL,
    cluster_id      text,
    dataset_id      bigint REFERENCES datasets (id),
    dataset         text,
    histories       integer NOT NULL DEFAULT 0,
    faces_scanned   bigint,
    pairs_scored    bigint,
    status          text NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'FINISHED', 'ERROR')),
    error           text,
    claim_ms        bigint,
    scan_ms         bigint,
    write_ms        bigint,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE TABLE histories (
    id                  bigserial PRIMARY KEY,
    user_id             bigint REFERENCES users (id),
    in_face_id          bigint NOT NULL REFERENCES faces (id),
    -- method, filter and N are deliberately unconstrained here: a bad value written straight into
    -- the table must end as an ERROR history with a message, not as a failed INSERT in someone's app.
    similarity_method   text NOT NULL DEFAULT 'cosine',
    face_source_filter  text NOT NULL DEFAULT 'all',
    max_results         integer NOT NULL DEFAULT 10,
    exclude_self        boolean NOT NULL DEFAULT true,
    max_distance        double precision,
    status              text NOT NULL DEFAULT 'PENDING'
                        CHECK (status IN ('PENDING', 'RUNNING', 'FINISHED', 'ERROR')),
    run_params          text,
    output              text,
    attempts            integer NOT NULL DEFAULT 0,
    run_id              bigint REFERENCES job_runs (id),
    lease_expires_at    timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz
);
CREATE INDEX histories_pending ON histories (id) WHERE status = 'PENDING';
CREATE INDEX histories_running ON histories (lease_expires_at) WHERE status = 'RUNNING';

CREATE TABLE history_items (
    history_id        bigint NOT NULL REFERENCES histories (id) ON DELETE CASCADE,
    rank              integer NOT NULL CHECK (rank >= 1),
    face_id           bigint NOT NULL,
    similarity_score  double precision NOT NULL,
    PRIMARY KEY (history_id, rank)
);

-- The state machine, enforced by the database whoever writes: only
-- PENDING→RUNNING, RUNNING→FINISHED|ERROR, and RUNNING→PENDING (requeue of a dead run).
CREATE FUNCTION histories_guard_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF (OLD.status = 'PENDING' AND NEW.status = 'RUNNING')
       OR (OLD.status = 'RUNNING' AND NEW.status IN ('FINISHED', 'ERROR', 'PENDING')) THEN
        IF NEW.status IN ('FINISHED', 'ERROR') AND NEW.finished_at IS NULL THEN
            NEW.finished_at := now();
        END IF;
        IF NEW.status = 'ERROR' AND EXISTS (SELECT 1 FROM history_items WHERE history_id = NEW.id) THEN
            RAISE EXCEPTION 'history % cannot be ERROR while it has result rows', NEW.id;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'history %: illegal status change % -> %', NEW.id, OLD.status, NEW.status;
END;
$$;

CREATE TRIGGER histories_guard_transition
    BEFORE UPDATE OF status ON histories
    FOR EACH ROW EXECUTE FUNCTION histories_guard_transition();

-- New histories always start PENDING, with no results and no run.
CREATE FUNCTION histories_guard_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'PENDING' THEN
        RAISE EXCEPTION 'new histories must be PENDING, not %', NEW.status;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER histories_guard_insert
    BEFORE INSERT ON histories
    FOR EACH ROW EXECUTE FUNCTION histories_guard_insert();
