//! The console: pages for SREs, on-call engineers and release managers,
//! rendered on the server from the dashboard API's own answers.
//!
//! A page asks the API in process — the same router, handlers, tokens,
//! roles and tenants as `/api/v1`, through [`tower::ServiceExt::oneshot`] —
//! and draws what it answers as HTML and SVG ([`chart`]): a page shows what
//! `curl` would, nothing is computed apart. Templates are `maud` macros,
//! checked and compiled into the binary with the stylesheet and the one
//! script of our own (refresh, range picker); no third-party asset, no CDN,
//! nothing fetched at run time.
//!
//! Signing in takes an API token and keeps it in an HttpOnly,
//! SameSite=Strict cookie scoped to `/console` (Secure behind TLS). A form
//! that writes carries a random value also kept in a cookie at sign-in (a
//! double-submit token), checked before anything is sent to the API.

mod alerts;
mod apps;
pub mod chart;
mod overview;
mod releases;
mod service;
mod trace;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;
use vigil_config::Role;

use crate::auth::Caller;
use crate::server::AppState;

const SESSION: &str = "vigil_console";
const CSRF: &str = "vigil_csrf";
/// An answer of the API read by a page is at most this large.
const MAX_ANSWER: usize = 64 << 20;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");
/// The tab's icon: an eye's iris in the palette's blue.
const ICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><circle cx='8' cy='8' r='7' fill='#0072B2'/><circle cx='8' cy='8' r='3' fill='#fff'/></svg>";

/// What the console's handlers share.
pub struct Console {
    state: Arc<AppState>,
    /// The API's own router, asked in process.
    api: Router,
    /// Whether the API is served over TLS: cookies are then `Secure`.
    secure: bool,
}

/// The console's routes, over `api`, the dashboard API's router.
pub fn routes(state: Arc<AppState>, api: Router, secure: bool) -> Router {
    let console = Arc::new(Console { state, api, secure });
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(overview::page))
        .route("/console/services/{service}", get(service::page))
        .route("/console/traces", get(trace::search))
        .route("/console/traces/{trace_id}", get(trace::page))
        .route("/console/releases", get(releases::page))
        .route("/console/apps", get(apps::apps))
        .route("/console/probes", get(apps::probes))
        .route("/console/alerts", get(alerts::page))
        .route("/console/silences", post(alerts::create))
        .route("/console/silences/{id}/expire", post(alerts::expire))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/assets/icon.svg", get(icon))
        .with_state(console)
}

/// A signed-in visitor: the token the API is asked with, the form token,
/// and who the token stands for.
pub struct Session {
    token: String,
    csrf: String,
    caller: Caller,
}

impl Session {
    fn can_edit(&self) -> bool {
        self.caller.role >= Role::Editor
    }
}

/// A cookie's value in a `Cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl FromRequestParts<Arc<Console>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let to_sign_in = || {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/console/", |p| p.as_str());
            let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            Redirect::to(&format!("/console/sign-in?next={next}")).into_response()
        };
        let token = cookie(&parts.headers, SESSION).map(decode);
        let csrf = cookie(&parts.headers, CSRF).map(str::to_owned);
        let (Some(token), Some(csrf)) = (token, csrf) else {
            return Err(to_sign_in());
        };
        match console
            .state
            .auth()
            .caller(Some(&format!("Bearer {token}")), None)
        {
            Ok(caller) => Ok(Session {
                token,
                csrf,
                caller,
            }),
            Err(_) => Err(to_sign_in()),
        }
    }
}

fn decode(text: &str) -> String {
    form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What the API answered other than success.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
}

impl Console {
    /// Asks the API for `path` (with its query) as the session's token.
    async fn get(&self, session: &Session, path: String) -> Result<Value, Failure> {
        self.send(session, Method::GET, &path, None).await
    }

    async fn send(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .map_err(|e| Failure {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
            })?;
        let Ok(response) = self.api.clone().oneshot(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| Failure {
                status: StatusCode::BAD_GATEWAY,
                message: e.to_string(),
            })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]
                .as_str()
                .or_else(|| value["message"].as_str())
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_owned,
                );
            Err(Failure { status, message })
        }
    }
}

/// The range a page shows and how often it refreshes, from its URL:
/// `?range=1h&refresh=30s`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct View {
    range: Option<String>,
    refresh: Option<String>,
    /// The tenant an admin reads.
    tenant: Option<String>,
    /// What charts are grouped by (the service page).
    by: Option<String>,
}

/// The ranges offered, with the step each is drawn at: steps of whole
/// rollup windows, the widest that still draw 24 points or more (a day is
/// drawn from 1 h windows: read at 20 min it merged 1,440 one-minute
/// windows per series, 3 s on SQLite over 10,000 series).
const RANGES: [(&str, &str); 6] = [
    ("5m", "10s"),
    ("15m", "10s"),
    ("1h", "1m"),
    ("6h", "5m"),
    ("24h", "1h"),
    ("7d", "6h"),
];
const REFRESHES: [&str; 4] = ["off", "10s", "30s", "1m"];

impl View {
    fn range(&self) -> &'static str {
        let asked = self.range.as_deref().unwrap_or("1h");
        RANGES
            .iter()
            .find(|(range, _)| *range == asked)
            .map_or("1h", |(range, _)| range)
    }

    fn step(&self) -> &'static str {
        let range = self.range();
        RANGES
            .iter()
            .find(|(r, _)| *r == range)
            .map_or("1m", |(_, step)| step)
    }

    fn refresh(&self) -> &'static str {
        let asked = self.refresh.as_deref().unwrap_or("off");
        REFRESHES
            .iter()
            .find(|r| **r == asked)
            .copied()
            .unwrap_or("off")
    }

    fn step_ms(&self) -> u64 {
        vigil_domain::time::parse_duration_ms(self.step()).unwrap_or(60_000)
    }

    /// The range as unix seconds, in whole steps: from the step holding
    /// `now − range` to the end of the last step that has ended.
    fn seconds(&self) -> (u64, u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let range = vigil_domain::time::parse_duration_ms(self.range()).unwrap_or(3_600_000) / 1000;
        let step = (self.step_ms() / 1000).max(1);
        let start = now.saturating_sub(range);
        (start - start % step, now - now % step)
    }

    /// The API parameters of the range (and tenant), to append to a query:
    /// whole steps up to the last one that has ended, so that no chart ends
    /// in a step still filling (whose rate would read low).
    fn api(&self) -> String {
        let (from_s, to_s) = self.seconds();
        let mut text = format!("from={}&to={}", from_s * 1000, to_s * 1000);
        if let Some(tenant) = self.tenant.as_deref().filter(|t| !t.is_empty()) {
            text.push_str(&format!("&tenant={}", encode(tenant)));
        }
        text
    }

    /// The tenant parameter alone, for paths without a range.
    fn tenant(&self) -> String {
        match self.tenant.as_deref().filter(|t| !t.is_empty()) {
            Some(tenant) => format!("tenant={}", encode(tenant)),
            None => String::new(),
        }
    }

    /// This view's parameters for a link to another page.
    fn link(&self, path: &str) -> String {
        let mut text = format!("{path}?range={}&refresh={}", self.range(), self.refresh());
        if let Some(tenant) = self.tenant.as_deref().filter(|t| !t.is_empty()) {
            text.push_str(&format!("&tenant={}", encode(tenant)));
        }
        text
    }
}

/// The page around `content`: navigation, range picker, refresh.
fn layout(title: &str, session: &Session, view: &View, path: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vigil" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="icon" href="/console/assets/icon.svg" type="image/svg+xml";
                script src="/console/assets/console.js" defer {}
            }
            body data-refresh=(view.refresh()) {
                header {
                    nav aria-label="pages" {
                        a.brand href=(view.link("/console/")) { "Vigil" }
                        a href=(view.link("/console/")) { "Overview" }
                        a href=(view.link("/console/releases")) { "Releases" }
                        a href=(view.link("/console/apps")) { "Apps" }
                        a href=(view.link("/console/probes")) { "Probes" }
                        a href=(view.link("/console/alerts")) { "Alerts" }
                    }
                    form.search method="get" action="/console/traces" role="search" {
                        label { span.visually-hidden { "Trace id" }
                            input type="search" name="trace_id" placeholder="trace id" size="20" pattern="[0-9a-fA-F]{32}" required;
                        }
                        button type="submit" { "Find" }
                    }
                    form.picker method="get" action=(path) {
                        label { "Range "
                            select name="range" {
                                @for (range, _) in RANGES {
                                    option value=(range) selected[range == view.range()] { "last " (range) }
                                }
                            }
                        }
                        label { "Refresh "
                            select name="refresh" {
                                @for refresh in REFRESHES {
                                    option value=(refresh) selected[refresh == view.refresh()] { (refresh) }
                                }
                            }
                        }
                        @if let Some(by) = &view.by {
                            input type="hidden" name="by" value=(by);
                        }
                        @if session.caller.role == Role::Admin {
                            label { "Tenant "
                                input type="text" name="tenant" size="10" value=(view.tenant.as_deref().unwrap_or(session.caller.tenant.as_str()));
                            }
                        }
                        button type="submit" { "Show" }
                    }
                    form.sign-out method="post" action="/console/sign-out" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        span.who { (session.caller.tenant.as_str()) " · " (role_name(session.caller.role)) }
                        button type="submit" { "Sign out" }
                    }
                }
                main { (content) }
            }
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Editor => "editor",
        Role::Admin => "admin",
    }
}

/// A page's HTML with the headers every console page has.
fn page(markup: Markup) -> Response {
    let mut response = Html(markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// What a part of a page shows when the API refused it.
fn failed(what: &str, failure: &Failure) -> Markup {
    html! {
        p.failure role="alert" data-status=(failure.status.as_u16()) {
            (what) ": " (failure.status.as_u16()) " " (failure.message)
        }
    }
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Next {
    next: Option<String>,
}

/// Where to go after signing in: a console path, never another site.
fn next_path(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/console/") && !n.starts_with("//"))
        .unwrap_or("/console/")
}

async fn sign_in_page(Query(next): Query<Next>) -> Response {
    sign_in_form(next.next.as_deref(), None)
}

fn sign_in_form(next: Option<&str>, error: Option<&str>) -> Response {
    page(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Vigil" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="icon" href="/console/assets/icon.svg" type="image/svg+xml";
            }
            body {
                main.sign-in {
                    h1 { "Vigil" }
                    form method="post" action="/console/sign-in" {
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        input type="hidden" name="next" value=(next_path(next));
                        @if let Some(error) = error {
                            p.failure role="alert" { (error) }
                        }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    })
}

async fn sign_in(
    State(console): State<Arc<Console>>,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let token = form.token.trim();
    if console
        .state
        .auth()
        .caller(Some(&format!("Bearer {token}")), None)
        .is_err()
    {
        let mut response = sign_in_form(form.next.as_deref(), Some("unknown token"));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let csrf: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let secure = if console.secure { "; Secure" } else { "" };
    let mut response = Redirect::to(next_path(form.next.as_deref())).into_response();
    for (name, value) in [(SESSION, encode(token)), (CSRF, csrf)] {
        let cookie = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// Whether a form's token is the session's.
fn same_csrf(session: &Session, sent: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn forbidden_form() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the form's token does not match this session's: reload the page and send it again",
    )
        .into_response()
}

async fn sign_out(session: Session, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    if !same_csrf(&session, &form.csrf) {
        return forbidden_form();
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    for name in [SESSION, CSRF] {
        let cookie = format!("{name}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A value of the API's JSON as a number, if it is one.
fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// The `{"labels": …, "points": [[ms, value]…]}` series of a query answer
/// as chart lines, each named by its labels' values.
fn query_lines(answer: &Value) -> Vec<chart::Line> {
    answer["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|series| {
            let name = series["labels"]
                .as_object()
                .map(|labels| {
                    labels
                        .values()
                        .map(|v| v.as_str().unwrap_or("").to_owned())
                        .collect::<Vec<_>>()
                        .join(" · ")
                })
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "all".to_owned());
            let points = series["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_u64()?, number(&p[1]))))
                .collect();
            chart::Line { name, points }
        })
        .collect()
}

/// A query answer's range, unix ms.
fn answer_range(answer: &Value) -> (u64, u64) {
    (
        answer["from"].as_u64().unwrap_or(0),
        answer["to"].as_u64().unwrap_or(0),
    )
}
