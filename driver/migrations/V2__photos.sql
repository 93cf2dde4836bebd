-- Photos (SPEC section 5): the identity of an image is the sha256 of its bytes. A dataset build
-- records every photo it encoded — including photos without a face — so the next build of the same
-- dataset skips them, and records every photo that failed, with the reason, per build.

-- Photos known to a dataset (dataset_name '' holds photos added with `faces add`).
CREATE TABLE images (
    dataset_name  text NOT NULL,
    sha256        text NOT NULL CHECK (length(sha256) = 64),
    uri           text NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    face_count    integer NOT NULL CHECK (face_count >= 0),
    dataset_id    bigint REFERENCES datasets (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_name, sha256)
);

CREATE TABLE dataset_builds (
    id            bigserial PRIMARY KEY,
    dataset_name  text NOT NULL,
    photos_uri    text NOT NULL,
    workers       integer NOT NULL,
    status        text NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'FINISHED', 'ERROR')),
    photos        integer NOT NULL DEFAULT 0,
    encoded       integer NOT NULL DEFAULT 0,
    skipped       integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    faces         bigint NOT NULL DEFAULT 0,
    -- The version the build made; NULL when nothing changed or the build failed.
    dataset_id    bigint REFERENCES datasets (id),
    error         text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

CREATE TABLE build_failures (
    build_id      bigint NOT NULL REFERENCES dataset_builds (id) ON DELETE CASCADE,
    image_uri     text NOT NULL,
    image_sha256  text,
    stage         text NOT NULL CHECK (stage IN ('read', 'decode', 'no_face', 'models')),
    message       text NOT NULL,
    PRIMARY KEY (build_id, image_uri)
);
