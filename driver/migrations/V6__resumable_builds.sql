-- Builds that stream and resume (ARCHITECTURE.md: Building from photos). Workers write each chunk
-- of photos as a part in the build's staging area; the driver registers the parts in photo order,
-- one transaction per chunk, into the build_* tables below, where nothing is visible to searches
-- or `faces add`. The build's last transaction moves them into faces and images and registers the
-- version: the version appears whole or not at all. A build whose driver or workers died keeps
-- its parts and rows, and the same command resumes it from the first unregistered chunk.

ALTER TABLE dataset_builds
    -- The version the build makes (pinned when it starts) and where its parts are.
    ADD COLUMN version            integer,
    ADD COLUMN staging_uri        text,
    -- What was asked (photos, encoder, shard size, chunk size): a resume must ask the same.
    ADD COLUMN settings           jsonb,
    ADD COLUMN runner             text,
    -- Photos registered so far, in photo order (always a whole number of chunks).
    ADD COLUMN registered_photos  integer NOT NULL DEFAULT 0,
    -- Times the build was started (1 + resumes).
    ADD COLUMN attempts           integer NOT NULL DEFAULT 1,
    -- Whether a later `dataset build` may pick the build up again.
    ADD COLUMN resumable          boolean NOT NULL DEFAULT false,
    ADD COLUMN duplicates         integer NOT NULL DEFAULT 0;

-- At most one resumable build per dataset.
CREATE UNIQUE INDEX dataset_builds_one_resumable ON dataset_builds (dataset_name) WHERE resumable;

-- Faces registered by an unfinished build, with the (new) shard of the build they are in.
CREATE TABLE build_faces (
    build_id      bigint NOT NULL REFERENCES dataset_builds (id) ON DELETE CASCADE,
    id            bigint PRIMARY KEY,
    shard         integer NOT NULL,
    source        text NOT NULL,
    actor_id      bigint REFERENCES actors (id),
    image_uri     text NOT NULL,
    image_sha256  text NOT NULL,
    bbox          integer[] NOT NULL,
    encoding      real[] NOT NULL,
    detector      text NOT NULL
);
CREATE INDEX build_faces_shard ON build_faces (build_id, shard);

-- Photos registered by an unfinished build (the first copy of each sha256).
CREATE TABLE build_images (
    build_id      bigint NOT NULL REFERENCES dataset_builds (id) ON DELETE CASCADE,
    sha256        text NOT NULL,
    uri           text NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    face_count    integer NOT NULL,
    PRIMARY KEY (build_id, sha256)
);

-- Shards an unfinished build has written (0 = its first new shard).
CREATE TABLE build_shards (
    build_id      bigint NOT NULL REFERENCES dataset_builds (id) ON DELETE CASCADE,
    shard         integer NOT NULL,
    path          text NOT NULL,
    rows          bigint NOT NULL,
    bytes         bigint NOT NULL,
    sha256        text NOT NULL,
    PRIMARY KEY (build_id, shard)
);
