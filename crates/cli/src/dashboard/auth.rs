//! Who may act: the admin token, as `Authorization: Bearer` (scripts) or
//! through the login form, which sets an HttpOnly, SameSite=Strict session
//! cookie (browsers).
//!
//! CSRF: a browser sends the cookie by itself, so every cookie-authorized
//! POST must carry its session's CSRF token in the form, and requests a
//! browser marks as cross-site (`Sec-Fetch-Site`) or whose `Origin` is
//! another host are refused. A bearer token is never sent by a browser on
//! its own, so it needs neither. Token and CSRF comparisons are constant-time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav, Page};
use super::{Dashboard, PageError};
use crate::wake::{bearer_token, token_matches};

/// The session cookie's name.
pub const COOKIE: &str = "stuckless_session";
/// Most sessions kept; beyond it the oldest is forgotten.
const MAX_SESSIONS: usize = 1024;
/// Longest name a person may give at login.
const MAX_NAME: usize = 64;

/// A logged-in browser.
#[derive(Clone, Debug)]
struct Session {
    /// The name given at login, shown in events.
    who: String,
    /// The token its forms must carry.
    csrf: String,
    /// Order of creation, to forget the oldest.
    serial: u64,
}

/// The logged-in browsers, by session id (in memory: a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<(u64, BTreeMap<String, Session>)>,
}

impl Sessions {
    fn create(&self, who: String) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (serial, map) = &mut *guard;
        *serial += 1;
        if map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.serial).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                who,
                csrf: csrf.clone(),
                serial: *serial,
            },
        );
        (id, csrf)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.get(id).cloned()
    }

    fn remove(&self, id: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.remove(id);
    }
}

/// 32 random bytes from the operating system, hex-encoded.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is looking, as far as the request shows.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    /// The actor actions are logged as; `None`: not authorized to act.
    pub actor: Option<String>,
    /// The session's CSRF token (cookie sessions only).
    pub csrf: Option<String>,
    /// Authorized by a bearer token (no CSRF token needed).
    pub bearer: bool,
    session: Option<String>,
}

impl Viewer {
    /// Reads the bearer token or the session cookie from `headers`.
    pub fn of(d: &Dashboard, headers: &HeaderMap) -> Viewer {
        let Some(admin) = &d.admin_token else {
            return Viewer::default();
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if let Some(token) = bearer {
            if token_matches(admin, token) {
                return Viewer {
                    actor: Some("admin token (bearer)".into()),
                    csrf: None,
                    bearer: true,
                    session: None,
                };
            }
            return Viewer::default();
        }
        let Some(id) = session_cookie(headers) else {
            return Viewer::default();
        };
        match d.sessions.get(&id) {
            Some(s) => Viewer {
                actor: Some(s.who),
                csrf: Some(s.csrf),
                bearer: false,
                session: Some(id),
            },
            None => Viewer::default(),
        }
    }

    /// Whether this viewer sees action buttons.
    pub fn can_act(&self) -> bool {
        self.actor.is_some()
    }

    /// Checks a POST that changes something: an admin token configured, the
    /// viewer authorized, and for cookie sessions the form's CSRF token and
    /// the request's origin. Returns the actor to log.
    pub fn authorize(
        &self,
        d: &Dashboard,
        headers: &HeaderMap,
        csrf: Option<&str>,
    ) -> Result<String, PageError> {
        if !d.writable() {
            return Err(PageError::Forbidden(
                "this dashboard is read-only: start it with an admin token (--admin-token-file or STUCKLESS_DASHBOARD_TOKEN) to enable actions".into(),
            ));
        }
        let Some(actor) = &self.actor else {
            return Err(PageError::Unauthorized(
                "actions need the admin token: log in, or send Authorization: Bearer <token>".into(),
            ));
        };
        if self.bearer {
            return Ok(actor.clone());
        }
        same_origin(headers)?;
        let expected = self.csrf.as_deref().unwrap_or_default();
        match csrf {
            Some(given) if !expected.is_empty() && token_matches(expected, given) => Ok(actor.clone()),
            _ => Err(PageError::Forbidden(
                "the form's CSRF token is missing or wrong: reload the page and try again".into(),
            )),
        }
    }
}

/// The session id from the `Cookie` header, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Refuses what a browser says came from another site, and an `Origin`
/// naming another host than the one asked.
pub fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return Err(PageError::Forbidden(format!(
                "cross-site request refused (Sec-Fetch-Site: {site})"
            )));
        }
    }
    if let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin_host != host {
            return Err(PageError::Forbidden(format!(
                "cross-origin request refused (Origin {origin} is not {host})"
            )));
        }
    }
    Ok(())
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    /// The name actions are logged under.
    #[serde(default)]
    name: String,
    /// The admin token.
    #[serde(default)]
    token: String,
}

/// GET /login
pub async fn login_page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    let viewer = Viewer::of(&d, &headers);
    login_form(&d, &viewer, StatusCode::OK, None)
}

fn login_form(d: &Dashboard, viewer: &Viewer, status: StatusCode, problem: Option<&str>) -> Response {
    let body = html! {
        @if !d.writable() {
            div.notice { "This dashboard is read-only: it was started without an admin token, so there is nothing to log in to." }
        } @else {
            @if let Some(problem) = problem { div.error { (problem) } }
            form.card method="post" action=(d.url("/login")) {
                p { label { "Your name (logged with every action) " input type="text" name="name" maxlength=(MAX_NAME) required; } }
                p { label { "Admin token " input type="password" name="token" autocomplete="current-password" required; } }
                button type="submit" { "Log in" }
            }
        }
    };
    let page = Page {
        title: "Log in".into(),
        nav: Nav::None,
        refresh: false,
        body,
    };
    layout::render(d, viewer, status, page)
}

/// POST /login: the right token sets the session cookie.
pub async fn login(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let viewer = Viewer::default();
    if let Err(error) = same_origin(&headers) {
        return layout::error_page(&d, &viewer, &error);
    }
    let Some(admin) = &d.admin_token else {
        return layout::error_page(
            &d,
            &viewer,
            &PageError::Forbidden("this dashboard is read-only: no admin token is configured".into()),
        );
    };
    if !token_matches(admin, form.token.trim()) {
        return login_form(&d, &viewer, StatusCode::UNAUTHORIZED, Some("wrong admin token"));
    }
    let name: String = form
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect::<String>()
        .trim()
        .to_owned();
    if name.is_empty() {
        return login_form(
            &d,
            &viewer,
            StatusCode::BAD_REQUEST,
            Some("give your name: actions are logged with it"),
        );
    }
    let (id, _) = d.sessions.create(name);
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&d.url("/"))).into_response()
}

/// The logout form's field.
#[derive(Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    csrf: Option<String>,
}

/// POST /logout: forgets the session and clears the cookie.
pub async fn logout(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let viewer = Viewer::of(&d, &headers);
    if let Err(error) = viewer.authorize(&d, &headers, form.csrf.as_deref()) {
        return layout::error_page(&d, &viewer, &error);
    }
    if let Some(id) = &viewer.session {
        d.sessions.remove(id);
    }
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&d.url("/"))).into_response()
}
