//! `facematch report`: searches as one self-contained HTML file — styles inline, every crop a
//! `data:` URI — that a person can mail around or open from a disk, with no server.

use super::api::{self, SearchView};
use super::crops::{self, Crops};
use super::pages::Card;
use super::templates::{CSS, Templates};
use crate::store::faces::{self, FaceCard};
use anyhow::{Result, anyhow};
use base64::Engine;
use facematch_datasets::S3Options;
use serde::Serialize;

/// One search as the report shows it.
#[derive(Serialize)]
struct Section {
    #[serde(flatten)]
    view: SearchView,
    query_crop: String,
    query_who: Option<String>,
    query_photo: Option<String>,
    /// The matched faces (`view.items` emptied: its crops are URLs, these are inline).
    cards: Vec<Card>,
}

/// The report of `ids` (each must exist), crops cut from the stored photos.
pub fn render(client: &mut postgres::Client, ids: &[i64], s3: &S3Options) -> Result<String> {
    let crops = Crops::new();
    let mut sections = Vec::new();
    for &id in ids {
        let (mut view, cards) =
            api::search_with_cards(client, id).map_err(|e| anyhow!(e.message))?;
        let query = faces::cards(client, &[view.face_id])?.into_iter().next();
        let items = std::mem::take(&mut view.items)
            .into_iter()
            .map(|mut item| {
                let card = cards.get(&item.face_id).cloned();
                let card = card.unwrap_or_else(|| unknown_face(item.face_id));
                // Inline: the report is read without the server.
                item.crop = data_uri(&crops, &card, s3)?;
                Ok(Card::of(item))
            })
            .collect::<Result<Vec<_>>>()?;
        sections.push(Section {
            query_crop: match &query {
                Some(card) => data_uri(&crops, card, s3)?,
                None => String::new(),
            },
            query_who: query.as_ref().and_then(|c| c.who.clone()),
            query_photo: query.as_ref().and_then(|c| c.image_uri.clone()),
            cards: items,
            view,
        });
    }
    Templates::new()?.render(
        "report.html",
        minijinja::context! {
            searches => sections,
            css => CSS,
            generated => chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        },
    )
}

/// A face's crop as a `data:` URI (the placeholder's SVG for a face without a photo). The
/// template writes it unescaped: it is a fixed prefix and base64, nothing a user wrote.
fn data_uri(crops: &Crops, card: &FaceCard, s3: &S3Options) -> Result<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    Ok(match crops.crop(card, s3)? {
        Some(jpeg) => format!("data:image/jpeg;base64,{}", engine.encode(&jpeg)),
        None => format!(
            "data:image/svg+xml;base64,{}",
            engine.encode(crops::placeholder_svg(card.id, card.who.as_deref()))
        ),
    })
}

/// The card of a face no longer registered: its placeholder says only its id.
fn unknown_face(id: i64) -> FaceCard {
    FaceCard {
        id,
        source: String::new(),
        who: None,
        image_uri: None,
        image_sha256: None,
        bbox: None,
        detector: None,
        dataset: None,
    }
}
