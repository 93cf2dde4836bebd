//! `facematch faces add`: photos to rows of `faces`, one per detected face, with the photo kept in
//! the image store (a folder or S3, content-addressed by sha256).
//!
//! All or nothing: every photo is read and encoded first, and only when each has a face is
//! anything stored or written. A photo already known by its sha256 is not encoded again; its
//! faces are returned as they are.

use crate::registry::{self, ImageRow, PhotoFace};
use anyhow::{Context, Result, bail};
use facematch_datasets::face::{
    DecodeLimits, EncodedPhoto, Encoder, FaceBox, decode_image, index_of_largest,
};
use facematch_datasets::shard::sha256_hex;
use facematch_datasets::{FaceSource, S3Options, Storage};
use postgres::Client;
use serde::Serialize;

/// Who the faces belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A user (source `U`), created if new.
    User(String),
    /// An actor (source `A`), created if new.
    Actor(String),
    /// An anonymous upload (source `U`, no user).
    Anonymous,
}

impl Owner {
    fn source(&self) -> FaceSource {
        match self {
            Owner::Actor(_) => FaceSource::Actor,
            Owner::User(_) | Owner::Anonymous => FaceSource::User,
        }
    }
}

/// What to add.
pub struct AddRequest<'a> {
    /// Photos: paths or `s3://bucket/key`.
    pub images: &'a [String],
    /// Whose faces they are.
    pub owner: Owner,
    /// Keep only the largest face of each photo.
    pub largest: bool,
    /// Where photos are kept (folder, `file://` or `s3://bucket/prefix`).
    pub image_store: &'a str,
    /// How to reach S3.
    pub s3: &'a S3Options,
    /// For photos already known in several datasets: whose faces to return (a dataset name).
    pub prefer_dataset: Option<&'a str>,
}

/// One face added (or found already known).
#[derive(Debug, Clone, Serialize)]
pub struct AddedFace {
    /// Face id.
    pub face_id: i64,
    /// The photo as given.
    pub image: String,
    /// Where the photo is kept.
    pub image_uri: String,
    /// `[x0, y0, x1, y1]`.
    pub bbox: Option<Vec<i32>>,
    /// `A` or `U`.
    pub source: String,
    /// Whether the photo was already known (nothing was encoded or written for it).
    pub known: bool,
}

/// Reads a photo from a path or an `s3://bucket/key` URI.
pub fn read_photo(image: &str, s3: &S3Options) -> Result<Vec<u8>> {
    if let Some(rest) = image.strip_prefix("s3://") {
        let (root, key) = match rest.rsplit_once('/') {
            Some((root, key)) if !key.is_empty() && !root.is_empty() => (root, key),
            _ => bail!("image {image}: expected s3://bucket/key"),
        };
        return Ok(Storage::open(&format!("s3://{root}"), s3)?
            .get(key)?
            .to_vec());
    }
    let path = image.strip_prefix("file://").unwrap_or(image);
    std::fs::read(path).with_context(|| format!("image {image}: cannot read"))
}

/// A photo read and, unless known, encoded.
enum Prepared {
    Known(Vec<AddedFace>),
    New { bytes: Vec<u8>, photo: EncodedPhoto },
}

/// Adds the faces of every photo, or nothing if any photo fails.
pub fn add_faces(
    client: &mut Client,
    request: &AddRequest<'_>,
    mut encoder: impl FnMut() -> Result<Encoder>,
) -> Result<Vec<AddedFace>> {
    let mut loaded: Option<Encoder> = None;
    let mut prepared = Vec::new();
    for image in request.images {
        let bytes = read_photo(image, request.s3)?;
        let sha256 = sha256_hex(&bytes);
        let known = known_faces(
            client,
            image,
            &sha256,
            request.largest,
            request.prefer_dataset,
        )?;
        if !known.is_empty() {
            prepared.push(Prepared::Known(known));
            continue;
        }
        // Decoded before the models load: a broken photo fails at once.
        let decoded = decode_image(image, &bytes, DecodeLimits::default())?;
        if loaded.is_none() {
            loaded = Some(encoder()?);
        }
        let encoder = loaded.as_ref().expect("loaded above");
        let mut photo = EncodedPhoto::encode(encoder, sha256, &decoded);
        if photo.faces.is_empty() {
            bail!("image {image}: no face found; nothing was added");
        }
        if request.largest {
            photo.keep_largest();
        }
        prepared.push(Prepared::New { bytes, photo });
    }

    let store = Storage::open(request.image_store, request.s3)?;
    let mut tx = client.transaction()?;
    let new_faces: usize = prepared
        .iter()
        .map(|p| match p {
            Prepared::New { photo, .. } => photo.faces.len(),
            Prepared::Known(_) => 0,
        })
        .sum();
    let (actor_id, user_id) = match &request.owner {
        _ if new_faces == 0 => (None, None),
        Owner::Actor(name) => (Some(registry::actor_id(&mut tx, name)?), None),
        Owner::User(name) => (None, Some(registry::user_id(&mut tx, name)?)),
        Owner::Anonymous => (None, None),
    };
    let mut next_id = registry::lock_next_face_id(&mut tx)?;
    registry::reserve_face_ids(&mut tx, next_id, new_faces as i64)?;
    let (mut added, mut rows, mut images, mut stored) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (image, prepared) in request.images.iter().zip(prepared) {
        let (bytes, photo) = match prepared {
            Prepared::Known(faces) => {
                added.extend(faces);
                continue;
            }
            Prepared::New { bytes, photo } => (bytes, photo),
        };
        let key = store_key(image, &photo.sha256);
        if !store.exists(&key)? {
            store.put(&key, bytes.into())?;
            stored.push(key.clone());
        }
        let uri = store.uri_of(&key);
        images.push(ImageRow {
            sha256: photo.sha256.clone(),
            uri: uri.clone(),
            width: photo.width,
            height: photo.height,
            face_count: photo.faces.len(),
        });
        for face in &photo.faces {
            let b = face.bbox.clipped(photo.width, photo.height);
            let bbox = [b.left, b.top, b.right, b.bottom].map(|v| v as i32);
            rows.push(PhotoFace {
                id: next_id,
                source: request.owner.source(),
                actor_id,
                user_id,
                image_uri: uri.clone(),
                image_sha256: photo.sha256.clone(),
                bbox,
                encoding: face.encoding.clone(),
            });
            added.push(AddedFace {
                face_id: next_id,
                image: image.clone(),
                image_uri: uri.clone(),
                bbox: Some(bbox.to_vec()),
                source: request.owner.source().to_string(),
                known: false,
            });
            next_id += 1;
        }
    }
    let written = (|| -> Result<()> {
        registry::insert_photo_faces(&mut tx, &rows, None)?;
        registry::insert_images(&mut tx, "", &images, None)?;
        tx.commit()?;
        Ok(())
    })();
    if let Err(e) = written {
        for key in stored {
            let _ = store.delete(&key);
        }
        return Err(e);
    }
    Ok(added)
}

/// Faces already registered for the photo with this sha256 (the largest only, if asked). A photo
/// built into several datasets has faces in each; those of `prefer` (a dataset name) come first,
/// and only one dataset's faces are returned.
fn known_faces(
    client: &mut Client,
    image: &str,
    sha256: &str,
    largest: bool,
    prefer: Option<&str>,
) -> Result<Vec<AddedFace>> {
    let rows = client.query(
        "SELECT f.id, f.source, f.image_uri, f.bbox, d.name FROM faces f
           LEFT JOIN datasets d ON d.id = f.first_dataset_id
          WHERE f.image_sha256 = $1
          ORDER BY d.name IS NOT DISTINCT FROM $2 DESC, f.first_dataset_id, f.id",
        &[&sha256, &prefer],
    )?;
    let group: Option<Option<String>> = rows.first().map(|r| r.get(4));
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| Some(r.get::<_, Option<String>>(4)) == group)
        .collect();
    let mut faces: Vec<AddedFace> = rows
        .iter()
        .map(|r| AddedFace {
            face_id: r.get(0),
            source: r.get(1),
            image_uri: r.get::<_, Option<String>>(2).unwrap_or_default(),
            bbox: r.get(3),
            image: image.to_string(),
            known: true,
        })
        .collect();
    if largest && faces.len() > 1 {
        let boxes = faces.iter().map(|f| match f.bbox.as_deref() {
            Some(&[left, top, right, bottom]) => FaceBox {
                left: left.into(),
                top: top.into(),
                right: right.into(),
                bottom: bottom.into(),
            },
            _ => FaceBox {
                left: 0,
                top: 0,
                right: -1,
                bottom: -1,
            },
        });
        let best = index_of_largest(boxes).unwrap_or(0);
        faces = vec![faces.swap_remove(best)];
    }
    Ok(faces)
}

/// `ab/abcdef….jpg`: content-addressed, keeping the photo's extension.
fn store_key(image: &str, sha256: &str) -> String {
    let ext = crate::build::photo_extension(image).unwrap_or_else(|| "img".into());
    format!("{}/{sha256}.{ext}", &sha256[..2])
}
