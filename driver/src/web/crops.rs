//! Face crops and photo views, cut from the stored photos and cached.
//!
//! A crop is asked for by face id only: the photo's location and the face's box come from the
//! `faces` row, so no path a client sends ever reaches the file system or the bucket. Photos are
//! read from wherever the database says they are kept (the image store, a build's folder or
//! bucket), decoded with the pipeline's size limits, and the result is cached as JPEG bytes.
//! A face imported as an encoding has no photo: the pages show a labelled placeholder.

use crate::photos::read_photo;
use crate::store::faces::FaceCard;
use anyhow::{Context, Result};
use axum::body::Bytes;
use facematch_datasets::S3Options;
use facematch_datasets::face::{DecodeLimits, decode_image};
use image::RgbImage;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Side of a face crop, in pixels.
pub const CROP_SIDE: u32 = 160;
/// Longest side of a photo as its page shows it.
pub const VIEW_SIDE: u32 = 720;

/// A photo's view (JPEG) and the photo's full size.
pub type View = (Bytes, (u32, u32));

/// The caches: crops by face id, views by photo sha256, and the last photos decoded (a group
/// photo's faces are cut from one decode).
pub struct Crops {
    crops: Mutex<LruCache<i64, Bytes>>,
    /// Views by photo sha256.
    views: Mutex<LruCache<String, View>>,
    decoded: Mutex<LruCache<String, Arc<RgbImage>>>,
}

impl Default for Crops {
    fn default() -> Self {
        Crops::new()
    }
}

impl Crops {
    /// Empty caches: 4,096 crops (~30 MB), 64 photo views, 8 decoded photos.
    pub fn new() -> Crops {
        let size = |n: usize| NonZeroUsize::new(n).expect("a positive cache size");
        Crops {
            crops: Mutex::new(LruCache::new(size(4096))),
            views: Mutex::new(LruCache::new(size(64))),
            decoded: Mutex::new(LruCache::new(size(8))),
        }
    }

    /// The JPEG crop of `face`, or None when it has no photo or box.
    pub fn crop(&self, face: &FaceCard, s3: &S3Options) -> Result<Option<Bytes>> {
        if let Some(hit) = lock(&self.crops).get(&face.id) {
            return Ok(Some(hit.clone()));
        }
        let (Some(uri), Some(bbox)) = (&face.image_uri, &face.bbox) else {
            return Ok(None);
        };
        let photo = self.decode(uri, face.image_sha256.as_deref(), s3)?;
        let jpeg = jpeg(&cut(&photo, bbox))
            .with_context(|| format!("face {}: encoding its crop", face.id))?;
        lock(&self.crops).put(face.id, jpeg.clone());
        Ok(Some(jpeg))
    }

    /// The photo at `uri` scaled to at most [`VIEW_SIDE`], as JPEG, with its full size.
    pub fn view(&self, uri: &str, sha256: &str, s3: &S3Options) -> Result<View> {
        if let Some(hit) = lock(&self.views).get(sha256) {
            return Ok(hit.clone());
        }
        let photo = self.decode(uri, Some(sha256), s3)?;
        let (w, h) = photo.dimensions();
        let scale = (VIEW_SIDE as f64 / w.max(h) as f64).min(1.0);
        let scaled = image::imageops::resize(
            &*photo,
            ((w as f64 * scale).round() as u32).max(1),
            ((h as f64 * scale).round() as u32).max(1),
            image::imageops::FilterType::Triangle,
        );
        let jpeg = jpeg(&scaled).with_context(|| format!("photo {sha256}: encoding its view"))?;
        lock(&self.views).put(sha256.to_string(), (jpeg.clone(), (w, h)));
        Ok((jpeg, (w, h)))
    }

    fn decode(&self, uri: &str, sha256: Option<&str>, s3: &S3Options) -> Result<Arc<RgbImage>> {
        let key = sha256.unwrap_or(uri).to_string();
        if let Some(hit) = lock(&self.decoded).get(&key) {
            return Ok(hit.clone());
        }
        let bytes = read_photo(uri, s3)?;
        let photo = Arc::new(decode_image(uri, &bytes, DecodeLimits::default())?);
        lock(&self.decoded).put(key, photo.clone());
        Ok(photo)
    }
}

fn lock<T>(cache: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while a cache was held leaves it consistent (puts and gets are whole).
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The square around `bbox` (`[x0, y0, x1, y1]`) with a margin of 40% of its side, kept inside
/// the photo, scaled to [`CROP_SIDE`].
pub fn cut(photo: &RgbImage, bbox: &[i32]) -> RgbImage {
    let (w, h) = (photo.width() as i64, photo.height() as i64);
    let [x0, y0, x1, y1] = match bbox {
        [a, b, c, d] => [*a, *b, *c, *d].map(i64::from),
        _ => [0, 0, w, h],
    };
    let side = ((x1 - x0).max(y1 - y0) as f64 * 1.4).round() as i64;
    let side = side.clamp(1, w.min(h).max(1));
    let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
    let left = (cx - side / 2).clamp(0, (w - side).max(0));
    let top = (cy - side / 2).clamp(0, (h - side).max(0));
    let square = image::imageops::crop_imm(
        photo,
        left as u32,
        top as u32,
        side.min(w) as u32,
        side.min(h) as u32,
    )
    .to_image();
    image::imageops::resize(
        &square,
        CROP_SIDE,
        CROP_SIDE,
        image::imageops::FilterType::Triangle,
    )
}

fn jpeg(image: &RgbImage) -> Result<Bytes> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(image)?;
    Ok(out.into())
}

/// An SVG standing in for a face without a photo, saying so.
pub fn placeholder_svg(face_id: i64, who: Option<&str>) -> String {
    let who = who.map(escape).unwrap_or_default();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CROP_SIDE}\" height=\"{CROP_SIDE}\" \
         viewBox=\"0 0 160 160\"><rect width=\"160\" height=\"160\" fill=\"#e4e7eb\"/>\
         <text x=\"80\" y=\"70\" font-family=\"sans-serif\" font-size=\"14\" text-anchor=\"middle\" \
         fill=\"#52606d\">face {face_id}</text><text x=\"80\" y=\"92\" font-family=\"sans-serif\" \
         font-size=\"12\" text-anchor=\"middle\" fill=\"#7b8794\">no photo</text>\
         <text x=\"80\" y=\"112\" font-family=\"sans-serif\" font-size=\"12\" text-anchor=\"middle\" \
         fill=\"#7b8794\">{who}</text></svg>"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crop_is_a_square_inside_the_photo_around_the_box() {
        let mut photo = RgbImage::new(400, 300);
        // A white box at x 300..380, y 10..90; the rest black.
        for y in 10..90 {
            for x in 300..380 {
                photo.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let crop = cut(&photo, &[300, 10, 380, 90]);
        assert_eq!(crop.dimensions(), (CROP_SIDE, CROP_SIDE));
        // 80 px × 1.4 = 112 px, pushed left and down to stay inside: the box fills its middle.
        let centre = crop.get_pixel(CROP_SIDE / 2, CROP_SIDE / 2);
        assert_eq!(centre.0, [255, 255, 255]);
        let corner = crop.get_pixel(2, CROP_SIDE - 3);
        assert_eq!(corner.0, [0, 0, 0]);
        // A box past the edges still gives a crop.
        assert_eq!(
            cut(&photo, &[-50, -50, 500, 400]).dimensions(),
            (CROP_SIDE, CROP_SIDE)
        );
    }

    #[test]
    fn the_placeholder_escapes_its_label() {
        let svg = placeholder_svg(7, Some("<b>&"));
        assert!(
            svg.contains("face 7") && svg.contains("&lt;b&gt;&amp;"),
            "{svg}"
        );
    }
}
