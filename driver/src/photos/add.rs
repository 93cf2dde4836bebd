//! `facematch faces add`: photos to rows of `faces`, one per detected face, with the photo kept in
//! the image store (a folder or S3, content-addressed by sha256).
//!
//! All or nothing: every photo is read and encoded first, and only when each has a face is
//! anything stored or written. A photo already known by its sha256 is not encoded again; its
//! faces are returned as they are.

use super::read_photo;
use crate::store::faces::{self, ImageRow, PhotoFace};
use anyhow::Result;
use facematch_datasets::face::{
    DecodeLimits, EncodedPhoto, Encoder, FaceBox, decode_image, index_of_largest,
};
use facematch_datasets::shard::sha256_hex;
use facematch_datasets::{DatasetError, FaceSource, S3Options, Storage};
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

/// Where a photo comes from.
#[derive(Debug, Clone)]
pub enum PhotoSource {
    /// A path or `s3://bucket/key`, read when the photo is added.
    Location(String),
    /// Bytes received (an upload), with the file name they came under.
    Upload {
        /// The upload's file name (its extension names the stored photo's).
        name: String,
        /// The photo.
        bytes: Vec<u8>,
    },
}

impl PhotoSource {
    /// What messages call the photo.
    pub fn name(&self) -> &str {
        match self {
            PhotoSource::Location(image) => image,
            PhotoSource::Upload { name, .. } => name,
        }
    }

    fn read(&self, s3: &S3Options) -> Result<Vec<u8>> {
        match self {
            PhotoSource::Location(image) => read_photo(image, s3),
            PhotoSource::Upload { bytes, .. } => Ok(bytes.clone()),
        }
    }
}

/// What to add.
pub struct AddRequest<'a> {
    /// The photos.
    pub images: &'a [PhotoSource],
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
    /// sha256 of the photo.
    pub sha256: String,
    /// `[x0, y0, x1, y1]`.
    pub bbox: Option<Vec<i32>>,
    /// `A` or `U`.
    pub source: String,
    /// Whether the photo was already known (nothing was encoded or written for it).
    pub known: bool,
}

/// A photo read and, unless known, encoded.
enum Prepared {
    Known(Vec<AddedFace>),
    New { bytes: Vec<u8>, photo: EncodedPhoto },
}

impl Prepared {
    /// Faces this photo adds (none when it is known).
    fn new_faces(&self) -> usize {
        match self {
            Prepared::New { photo, .. } => photo.faces.len(),
            Prepared::Known(_) => 0,
        }
    }
}

/// dlib's models, loaded the first time a photo needs them (a known photo never does) and kept
/// for the next (a server adds photo after photo).
pub struct LazyEncoder<F> {
    loaded: Option<Encoder>,
    load: F,
}

impl<F: FnMut() -> Result<Encoder>> LazyEncoder<F> {
    /// Nothing loaded yet; `load` loads the models.
    pub fn new(load: F) -> LazyEncoder<F> {
        LazyEncoder { loaded: None, load }
    }

    /// The encoder, loaded now if it was not.
    pub fn get(&mut self) -> Result<&Encoder> {
        match self.loaded {
            Some(ref encoder) => Ok(encoder),
            None => Ok(self.loaded.insert((self.load)()?)),
        }
    }
}

/// Adds the faces of every photo, or nothing if any photo fails.
pub fn add_faces<F: FnMut() -> Result<Encoder>>(
    client: &mut Client,
    request: &AddRequest<'_>,
    encoder: &mut LazyEncoder<F>,
) -> Result<Vec<AddedFace>> {
    let prepared = prepare(client, request, encoder)?;
    let store = Storage::open(request.image_store, request.s3)?;
    let mut stored = Vec::new();
    let registered = register(client, request, &store, prepared, &mut stored);
    if registered.is_err() {
        for key in stored {
            let _ = store.delete(&key);
        }
    }
    registered
}

/// Reads every photo and encodes those not known yet; fails on the first photo without a face.
/// Models are loaded only when a photo needs them, and only once.
fn prepare<F: FnMut() -> Result<Encoder>>(
    client: &mut Client,
    request: &AddRequest<'_>,
    encoder: &mut LazyEncoder<F>,
) -> Result<Vec<Prepared>> {
    let mut prepared = Vec::new();
    for source in request.images {
        let image = source.name();
        let bytes = source.read(request.s3)?;
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
        let mut photo = EncodedPhoto::encode(encoder.get()?, sha256, &decoded);
        if photo.faces.is_empty() {
            return Err(DatasetError::Image {
                image: image.to_string(),
                message: "no face found; nothing was added".into(),
            }
            .into());
        }
        if request.largest {
            photo.keep_largest();
        }
        prepared.push(Prepared::New { bytes, photo });
    }
    Ok(prepared)
}

/// Stores the new photos (listing each key it wrote in `stored`) and registers their faces in
/// one transaction.
fn register(
    client: &mut Client,
    request: &AddRequest<'_>,
    store: &Storage,
    prepared: Vec<Prepared>,
    stored: &mut Vec<String>,
) -> Result<Vec<AddedFace>> {
    let mut tx = client.transaction()?;
    let new_faces: usize = prepared.iter().map(Prepared::new_faces).sum();
    let (actor_id, user_id) = match &request.owner {
        _ if new_faces == 0 => (None, None),
        Owner::Actor(name) => (Some(faces::actor_id(&mut tx, name)?), None),
        Owner::User(name) => (None, Some(faces::user_id(&mut tx, name)?)),
        Owner::Anonymous => (None, None),
    };
    let mut next_id = faces::lock_next_face_id(&mut tx)?;
    faces::reserve_face_ids(&mut tx, next_id, new_faces as i64)?;
    let (mut added, mut rows, mut images) = (Vec::new(), Vec::new(), Vec::new());
    for (source, prepared) in request.images.iter().zip(prepared) {
        let image = source.name();
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
                detector: face.detector.as_str(),
            });
            added.push(AddedFace {
                face_id: next_id,
                image: image.to_string(),
                image_uri: uri.clone(),
                sha256: photo.sha256.clone(),
                bbox: Some(bbox.to_vec()),
                source: request.owner.source().to_string(),
                known: false,
            });
            next_id += 1;
        }
    }
    faces::insert_photo_faces(&mut tx, &rows, None)?;
    faces::insert_images(&mut tx, "", &images, None)?;
    tx.commit()?;
    Ok(added)
}

/// Faces already registered for the photo with this sha256 (the largest only, if asked); those
/// of dataset `prefer` when the photo is in several.
fn known_faces(
    client: &mut Client,
    image: &str,
    sha256: &str,
    largest: bool,
    prefer: Option<&str>,
) -> Result<Vec<AddedFace>> {
    let mut faces: Vec<AddedFace> = faces::faces_of_photo(client, sha256, prefer)?
        .into_iter()
        .map(|f| AddedFace {
            face_id: f.face_id,
            source: f.source,
            image_uri: f.image_uri.unwrap_or_default(),
            sha256: sha256.to_string(),
            bbox: f.bbox,
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
    let ext = super::photo_extension(image).unwrap_or_else(|| "img".into());
    format!("{}/{sha256}.{ext}", &sha256[..2])
}
