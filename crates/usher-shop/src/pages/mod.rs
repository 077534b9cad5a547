//! The browser side: `GET /` renders the page, and plain HTML forms post to the form routes,
//! which do the same work as the API (shared functions in [`crate::api`]) and answer
//! `303 See Other` back to `/` with a short notice or error code in the query — the classic
//! post/redirect/get, so reloading never re-submits a form.
//!
//! The session cookie is `SameSite=Lax`, so another site cannot make a browser submit these
//! forms with it (cross-site POSTs carry no Lax cookie).

mod html;
mod text;

use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use usher_session::Session;

use crate::api::auth::{self, Credentials};
use crate::api::cart;
use crate::api::checkout::place_order;
use crate::api::prefs::{self, Language, PrefsUpdate, Theme};
use crate::error::ApiError;
use crate::state::AppState;

pub use html::escape;

/// Orders the page lists.
const PAGE_ORDERS: u32 = 10;

/// Codes `?e=` may carry; anything else is shown as a generic failure.
const KNOWN_ERRORS: &[&str] = &[
    "bad_credentials",
    "user_exists",
    "invalid_user",
    "invalid_password",
    "not_signed_in",
    "unknown_sku",
    "invalid_qty",
    "cart_line_full",
    "cart_empty",
    "session_store_unavailable",
    "session_ended",
    "database_unavailable",
    "bad_form",
];

/// `GET /` and the form routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/cart/add", post(add))
        .route("/cart/remove", post(remove))
        .route("/checkout", post(checkout))
        .route("/prefs", post(save_prefs))
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    m: Option<String>,
    e: Option<String>,
}

async fn index(
    State(state): State<AppState>,
    session: Session,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let user = session.user();
    let orders = match &user {
        Some(u) => match state.db.orders(u, PAGE_ORDERS).await {
            Ok(o) => o,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => Vec::new(),
    };
    let notice = q.m.as_deref().and_then(notice_text);
    let error = q.e.as_deref().map(|e| {
        KNOWN_ERRORS
            .iter()
            .copied()
            .find(|k| *k == e)
            .unwrap_or("error")
    });
    let page = html::Page {
        server: &state.id,
        store: state.store_kind,
        user: user.as_deref(),
        cart: &cart::lines(&session),
        orders: &orders,
        prefs: prefs::current(&session),
        notice,
        error,
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(html::render(&page)),
    )
        .into_response()
}

fn notice_text(m: &str) -> Option<&'static str> {
    Some(match m {
        "signed_in" => "✓ signed in",
        "signed_up" => "✓ account created, signed in",
        "signed_out" => "✓ signed out",
        "added" => "✓ added to cart",
        "removed" => "✓ removed from cart",
        "ordered" => "✓ order placed",
        "saved" => "✓ preferences saved",
        _ => return None,
    })
}

/// 303 to `/?m=<notice>` on success, `/?e=<code>` on failure.
fn done(result: Result<(), ApiError>, notice: &str) -> Redirect {
    match result {
        Ok(()) => Redirect::to(&format!("/?m={notice}")),
        Err(e) => Redirect::to(&format!("/?e={}", e.code)),
    }
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, ApiError> {
    f.map(|Form(v)| v)
        .map_err(|e| ApiError::new(e.status(), "bad_form", e.body_text()))
}

#[derive(Debug, Deserialize)]
struct CredentialsForm {
    user: String,
    password: String,
}

impl From<CredentialsForm> for Credentials {
    fn from(f: CredentialsForm) -> Self {
        Self {
            user: f.user,
            password: f.password,
        }
    }
}

async fn signup(
    State(state): State<AppState>,
    session: Session,
    f: Result<Form<CredentialsForm>, FormRejection>,
) -> Redirect {
    let result = async {
        let f = form(f)?;
        let creds = Credentials {
            user: f.user.clone(),
            password: f.password.clone(),
        };
        auth::create_account(&state, creds).await?;
        auth::sign_in(&state, &session, f.into()).await
    };
    done(result.await, "signed_up")
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    f: Result<Form<CredentialsForm>, FormRejection>,
) -> Redirect {
    let result = async { auth::sign_in(&state, &session, form(f)?.into()).await };
    done(result.await, "signed_in")
}

async fn logout(session: Session) -> Redirect {
    done(session.logout().await.map_err(ApiError::from), "signed_out")
}

#[derive(Debug, Deserialize)]
struct AddForm {
    sku: String,
    qty: i64,
}

async fn add(session: Session, f: Result<Form<AddForm>, FormRejection>) -> Redirect {
    let result = async {
        let f = form(f)?;
        cart::add(&session, &f.sku, f.qty).await.map(drop)
    };
    done(result.await, "added")
}

#[derive(Debug, Deserialize)]
struct SkuForm {
    sku: String,
}

async fn remove(session: Session, f: Result<Form<SkuForm>, FormRejection>) -> Redirect {
    let result = async { cart::remove(&session, &form(f)?.sku).await };
    done(result.await, "removed")
}

async fn checkout(State(state): State<AppState>, session: Session) -> Redirect {
    done(place_order(&state, &session).await.map(drop), "ordered")
}

#[derive(Debug, Deserialize)]
struct PrefsForm {
    theme: Theme,
    language: Language,
}

async fn save_prefs(session: Session, f: Result<Form<PrefsForm>, FormRejection>) -> Redirect {
    let result = async {
        let f = form(f)?;
        let update = PrefsUpdate {
            theme: Some(f.theme),
            language: Some(f.language),
        };
        prefs::apply(&session, update).await.map(drop)
    };
    done(result.await, "saved")
}
