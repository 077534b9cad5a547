//! Preferences (theme, language) and video watch progress: small session state that anonymous
//! visitors have too, written with atomic [`FieldOp::Merge`]s so two requests changing different
//! keys (the theme in one tab, the language in another) both stick.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use usher_session::{FieldOp, Session};

use super::body::ApiJson;
use crate::error::ApiError;
use crate::state::AppState;

/// Session field holding the preferences object.
pub const PREFS_FIELD: &str = "prefs";
/// Session field holding `{video: seconds}`.
pub const PROGRESS_FIELD: &str = "progress";
/// Most videos whose progress a session keeps.
pub const MAX_VIDEOS: usize = 100;
/// Largest accepted position, seconds (a week).
pub const MAX_SECONDS: f64 = 604_800.0;

/// Colour theme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Dark text on light.
    #[default]
    Light,
    /// Light text on dark.
    Dark,
}

/// Page language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// German.
    De,
    /// French.
    Fr,
}

/// The preferences, defaults filled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    /// Theme.
    pub theme: Theme,
    /// Language.
    pub language: Language,
}

/// `PUT /api/prefs` body: any subset of the preferences.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefsUpdate {
    /// New theme.
    pub theme: Option<Theme>,
    /// New language.
    pub language: Option<Language>,
}

/// The session's preferences; anything unreadable counts as the default.
pub fn current(session: &Session) -> Prefs {
    session
        .get(PREFS_FIELD)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Applies `update` atomically; returns the preferences after it. Shared with the pages.
pub async fn apply(session: &Session, update: PrefsUpdate) -> Result<Prefs, ApiError> {
    let mut entries = Map::new();
    if let Some(t) = update.theme {
        entries.insert("theme".into(), json!(t));
    }
    if let Some(l) = update.language {
        entries.insert("language".into(), json!(l));
    }
    if entries.is_empty() {
        return Err(ApiError::invalid(
            "invalid_body",
            "give at least one of theme, language",
        ));
    }
    let merged = session.update(PREFS_FIELD, FieldOp::Merge(entries)).await?;
    Ok(serde_json::from_value(merged).unwrap_or_default())
}

/// `GET /api/prefs` → `{theme, language}`.
pub async fn get_prefs(session: Session) -> Json<Prefs> {
    Json(current(&session))
}

/// `PUT /api/prefs {theme?, language?}` → `{theme, language}`.
pub async fn put_prefs(
    session: Session,
    ApiJson(update): ApiJson<PrefsUpdate>,
) -> Result<Json<Prefs>, ApiError> {
    apply(&session, update).await.map(Json)
}

/// `{seconds}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Position in the video, seconds (0 to a week).
    pub seconds: f64,
}

pub(crate) fn video_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(video) = path.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    let ok = !video.is_empty()
        && video.len() <= 64
        && video
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(video)
    } else {
        Err(ApiError::invalid(
            "invalid_video",
            "video ids are 1 to 64 of A-Z a-z 0-9 - _",
        ))
    }
}

/// 422 `invalid_seconds` unless `seconds` is a position from 0 to [`MAX_SECONDS`].
pub(crate) fn check_seconds(seconds: f64) -> Result<(), ApiError> {
    if seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_seconds",
            format!("seconds must be from 0 to {MAX_SECONDS}"),
        ))
    }
}

/// 422 `too_many_videos`.
pub(crate) fn too_many_videos() -> ApiError {
    ApiError::invalid(
        "too_many_videos",
        format!("progress is kept for at most {MAX_VIDEOS} videos"),
    )
}

/// `PUT /api/progress/{video} {seconds}` → `{video, seconds}`.
pub async fn put_progress(
    State(state): State<AppState>,
    session: Session,
    video: Result<Path<String>, PathRejection>,
    ApiJson(p): ApiJson<Progress>,
) -> Result<Json<Value>, ApiError> {
    let video = video_id(video)?;
    check_seconds(p.seconds)?;
    let known = session.get(PROGRESS_FIELD);
    let known = known.as_ref().and_then(Value::as_object);
    // Best effort under concurrency: bounds the session's size, not exactly at MAX_VIDEOS.
    if known.is_some_and(|m| m.len() >= MAX_VIDEOS && !m.contains_key(&video)) {
        return Err(too_many_videos());
    }
    let mut entry = Map::new();
    entry.insert(video.clone(), json!(p.seconds));
    session
        .update(PROGRESS_FIELD, FieldOp::Merge(entry))
        .await?;
    Ok(Json(
        json!({ "video": video, "seconds": p.seconds, "server": state.id }),
    ))
}

/// `GET /api/progress/{video}` → `{video, seconds}` (0 if never watched).
pub async fn get_progress(
    session: Session,
    video: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let video = video_id(video)?;
    let seconds = session
        .get(PROGRESS_FIELD)
        .and_then(|v| v.get(&video).and_then(Value::as_f64))
        .unwrap_or(0.0);
    Ok(Json(json!({ "video": video, "seconds": seconds })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefs_serialize_lowercase_and_default() {
        let p = Prefs {
            theme: Theme::Dark,
            language: Language::De,
        };
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            json!({"theme": "dark", "language": "de"})
        );
        let partial: Prefs = serde_json::from_value(json!({"theme": "dark"})).unwrap();
        assert_eq!(partial.language, Language::En);
        assert!(serde_json::from_value::<PrefsUpdate>(json!({"theme": "pink"})).is_err());
        assert!(serde_json::from_value::<PrefsUpdate>(json!({"font": "x"})).is_err());
    }
}
