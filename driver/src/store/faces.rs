//! Faces, photos, actors and users in Postgres, and face-id allocation: what a photo build and
//! `faces add` register besides a dataset version.

use anyhow::Result;
use postgres::GenericClient;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

/// Locks face-id allocation until the transaction ends (concurrent allocations queue) and returns
/// the next free id for new photo faces: after every id in use (imported ids and the faces an
/// unfinished build has staged included) and never below 120000, the old system's first user
/// face. A build's staged rows are its reservation: they commit or roll back with the chunk that
/// took them, so an interrupted build leaves no gap.
pub fn lock_next_face_id(tx: &mut impl GenericClient) -> Result<i64> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('facematch.face_ids'))",
        &[],
    )?;
    Ok(tx
        .query_one(
            "SELECT greatest(
                 coalesce((SELECT max(id) FROM faces), 0) + 1,
                 coalesce((SELECT max(id) FROM build_faces), 0) + 1,
                 (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM faces_user_id_seq))",
            &[],
        )?
        .get(0))
}

/// Marks `first..first + count` as used (under the lock of [`lock_next_face_id`]).
pub fn reserve_face_ids(tx: &mut impl GenericClient, first: i64, count: i64) -> Result<()> {
    if count > 0 {
        tx.execute(
            "SELECT setval('faces_user_id_seq', $1)",
            &[&(first + count - 1)],
        )?;
    }
    Ok(())
}

/// The id of the actor called `name`, created if new.
pub fn actor_id(tx: &mut impl GenericClient, name: &str) -> Result<i64> {
    named_id(tx, "actors", "name", name)
}

/// The id of the user called `name`, created if new.
pub fn user_id(tx: &mut impl GenericClient, name: &str) -> Result<i64> {
    named_id(tx, "users", "username", name)
}

/// The id of the row of `table` whose unique `column` is `name`, inserting it if new.
fn named_id(tx: &mut impl GenericClient, table: &str, column: &str, name: &str) -> Result<i64> {
    Ok(tx
        .query_one(
            &format!(
                "INSERT INTO {table} ({column}) VALUES ($1)
                 ON CONFLICT ({column}) DO UPDATE SET {column} = excluded.{column} RETURNING id"
            ),
            &[&name],
        )?
        .get(0))
}

/// A face found in a photo, as registered in `faces`.
#[derive(Debug, Clone)]
pub struct PhotoFace {
    /// Face id.
    pub id: i64,
    /// Actor or user.
    pub source: facematch_datasets::FaceSource,
    /// Its actor, if any.
    pub actor_id: Option<i64>,
    /// Its user, if any.
    pub user_id: Option<i64>,
    /// The photo.
    pub image_uri: String,
    /// sha256 of the photo.
    pub image_sha256: String,
    /// `[x0, y0, x1, y1]`, clipped to the photo.
    pub bbox: [i32; 4],
    /// The detector that found it: `hog` or `cnn`.
    pub detector: &'static str,
    /// The encoding.
    pub encoding: Vec<f32>,
}

/// Copies photo faces into `faces` (their ids must be new).
pub fn insert_photo_faces(
    tx: &mut postgres::Transaction<'_>,
    faces: &[PhotoFace],
    dataset_id: Option<i64>,
) -> Result<()> {
    let sink = tx.copy_in(
        "COPY faces (id, source, actor_id, user_id, image_uri, image_sha256, bbox, encoding, dim, first_dataset_id,
                     detector)
         FROM STDIN BINARY",
    )?;
    let mut copy = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT4_ARRAY,
            Type::FLOAT4_ARRAY,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
        ],
    );
    for face in faces {
        let bbox = face.bbox.to_vec();
        copy.write(&[
            &face.id,
            &face.source.to_string(),
            &face.actor_id,
            &face.user_id,
            &face.image_uri,
            &face.image_sha256,
            &bbox,
            &face.encoding,
            &(face.encoding.len() as i32),
            &dataset_id,
            &face.detector,
        ])?;
    }
    copy.finish()?;
    Ok(())
}

/// A photo to remember in `images`.
#[derive(Debug, Clone)]
pub struct ImageRow {
    /// sha256 of its bytes.
    pub sha256: String,
    /// Where it is.
    pub uri: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Faces found in it.
    pub face_count: usize,
}

/// Records photos as known to `dataset_name` (already known ones are left as they are).
pub fn insert_images(
    tx: &mut impl GenericClient,
    dataset_name: &str,
    images: &[ImageRow],
    dataset_id: Option<i64>,
) -> Result<()> {
    let statement = tx.prepare(
        "INSERT INTO images (dataset_name, sha256, uri, width, height, face_count, dataset_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )?;
    for image in images {
        tx.execute(
            &statement,
            &[
                &dataset_name,
                &image.sha256,
                &image.uri,
                &(image.width as i32),
                &(image.height as i32),
                &(image.face_count as i32),
                &dataset_id,
            ],
        )?;
    }
    Ok(())
}

/// A face already registered for a photo.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownFace {
    /// Face id.
    pub face_id: i64,
    /// `A` or `U`.
    pub source: String,
    /// Where the photo is kept.
    pub image_uri: Option<String>,
    /// `[x0, y0, x1, y1]`.
    pub bbox: Option<Vec<i32>>,
    /// Its encoding.
    pub encoding: Vec<f32>,
}

/// The faces registered for the photo with this sha256. A photo built into several datasets has
/// faces in each; only one dataset's faces are returned: those of `prefer` (a dataset name) if it
/// has some, else those of the dataset that first held the photo.
pub fn faces_of_photo(
    client: &mut impl GenericClient,
    sha256: &str,
    prefer: Option<&str>,
) -> Result<Vec<KnownFace>> {
    let rows = client.query(
        "SELECT f.id, f.source, f.image_uri, f.bbox, d.name, f.encoding FROM faces f
           LEFT JOIN datasets d ON d.id = f.first_dataset_id
          WHERE f.image_sha256 = $1
          ORDER BY d.name IS NOT DISTINCT FROM $2 DESC, f.first_dataset_id, f.id",
        &[&sha256, &prefer],
    )?;
    let group: Option<Option<String>> = rows.first().map(|r| r.get(4));
    Ok(rows
        .iter()
        .filter(|r| Some(r.get::<_, Option<String>>(4)) == group)
        .map(|r| KnownFace {
            face_id: r.get(0),
            source: r.get(1),
            image_uri: r.get(2),
            bbox: r.get(3),
            encoding: r.get(5),
        })
        .collect())
}

/// Faces and photos per source, and the number of actors and users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceCounts {
    /// Faces registered in all.
    pub faces: i64,
    /// Distinct photos with at least one face.
    pub images: i64,
    /// (source, faces, distinct photos), by source.
    pub sources: Vec<(String, i64, i64)>,
    /// Actors.
    pub actors: i64,
    /// Users.
    pub users: i64,
}

/// Counts every registered face, photo, actor and user.
pub fn counts(client: &mut impl GenericClient) -> Result<FaceCounts> {
    let sources = client
        .query(
            "SELECT source, count(*), count(DISTINCT image_sha256) FROM faces
              GROUP BY source ORDER BY source",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let totals = client.query_one(
        "SELECT (SELECT count(*) FROM faces), (SELECT count(DISTINCT image_sha256) FROM faces),
                (SELECT count(*) FROM actors), (SELECT count(*) FROM users)",
        &[],
    )?;
    Ok(FaceCounts {
        faces: totals.get(0),
        images: totals.get(1),
        sources,
        actors: totals.get(2),
        users: totals.get(3),
    })
}

/// What a page shows about a face: who, which photo, where in it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaceCard {
    /// Face id.
    pub id: i64,
    /// `A` or `U`.
    pub source: String,
    /// The actor's or user's name, if any.
    pub who: Option<String>,
    /// Where the photo is kept (None for faces imported as encodings).
    pub image_uri: Option<String>,
    /// sha256 of the photo.
    pub image_sha256: Option<String>,
    /// `[x0, y0, x1, y1]` in the photo.
    pub bbox: Option<Vec<i32>>,
    /// `hog` or `cnn`, for faces found in photos.
    pub detector: Option<String>,
    /// The dataset that first held it, `name@vN`.
    pub dataset: Option<String>,
}

/// The cards of the faces `ids` that exist, in `ids` order.
pub fn cards(client: &mut impl GenericClient, ids: &[i64]) -> Result<Vec<FaceCard>> {
    Ok(client
        .query(
            "SELECT f.id, f.source, coalesce(a.name, u.username), f.image_uri, f.image_sha256,
                    f.bbox, f.detector, d.name || '@v' || d.version
               FROM faces f
               LEFT JOIN actors a ON a.id = f.actor_id
               LEFT JOIN users u ON u.id = f.user_id
               LEFT JOIN datasets d ON d.id = f.first_dataset_id
              WHERE f.id = ANY($1) ORDER BY array_position($1, f.id)",
            &[&ids],
        )?
        .iter()
        .map(|r| FaceCard {
            id: r.get(0),
            source: r.get(1),
            who: r.get(2),
            image_uri: r.get(3),
            image_sha256: r.get(4),
            bbox: r.get(5),
            detector: r.get(6),
            dataset: r.get(7),
        })
        .collect())
}

/// A known photo: where it is, its size, and its faces (those of one dataset, as
/// [`faces_of_photo`] picks them) with their encodings; None when no face has this sha256.
pub fn photo(
    client: &mut impl GenericClient,
    sha256: &str,
) -> Result<Option<(KnownPhoto, Vec<KnownFace>)>> {
    let known = faces_of_photo(client, sha256, None)?;
    let Some(first) = known.first() else {
        return Ok(None);
    };
    let size = client.query_opt(
        "SELECT width, height FROM images WHERE sha256 = $1 ORDER BY created_at LIMIT 1",
        &[&sha256],
    )?;
    let photo = KnownPhoto {
        sha256: sha256.to_string(),
        uri: first.image_uri.clone(),
        width: size.as_ref().map(|r| r.get(0)),
        height: size.as_ref().map(|r| r.get(1)),
    };
    Ok(Some((photo, known)))
}

/// A photo faces came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KnownPhoto {
    /// sha256 of its bytes.
    pub sha256: String,
    /// Where it is kept.
    pub uri: Option<String>,
    /// Width in pixels, if recorded.
    pub width: Option<i32>,
    /// Height in pixels, if recorded.
    pub height: Option<i32>,
}

/// Faces per source of each dataset version: (dataset id, source, faces). A version holds the
/// faces first registered by it and by the earlier versions of its name.
pub fn counts_per_version(client: &mut impl GenericClient) -> Result<Vec<(i64, String, i64)>> {
    Ok(client
        .query(
            "WITH per_version AS (
                 SELECT first_dataset_id AS id, source, count(*) AS n FROM faces
                  WHERE first_dataset_id IS NOT NULL GROUP BY 1, 2)
             SELECT d.id, p.source, sum(p.n)::bigint
               FROM datasets d
               JOIN datasets earlier ON earlier.name = d.name AND earlier.version <= d.version
               JOIN per_version p ON p.id = earlier.id
              GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
