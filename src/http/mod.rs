//! The REST API (warp 0.4): a catch-all filter that collects the request
//! (with the body size capped), a router that matches method and path, one
//! handler per route, DTOs validated at the edge, and errors mapped to
//! statuses in one place (`error`).
//!
//! Dependency rule: this module talks to [`Runtime`] only, never to storage.

pub mod dto;
pub mod error;
pub mod handlers;
pub mod openapi;

use crate::actors::Runtime;
use bytes::{Buf, Bytes, BytesMut};
use error::ApiError;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use warp::http::{HeaderMap, Method};
use warp::reply::Response;
use warp::Filter;

/// A request as the router sees it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Every route of the API as one warp filter.
pub fn routes(
    rt: Arc<Runtime>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let limit = rt.settings.http.max_body_bytes;
    warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query: String, headers, body| {
                let rt = rt.clone();
                async move {
                    let started = Instant::now();
                    let path = path.as_str().to_owned();
                    let resp = match read_body(body, limit).await {
                        Ok(body) => {
                            let req = Request {
                                method,
                                path,
                                query: (!query.is_empty()).then_some(query),
                                headers,
                                body,
                            };
                            let route = route_name(&req);
                            let resp = dispatch(&rt, &req)
                                .await
                                .unwrap_or_else(ApiError::into_response);
                            record(route, req.method.as_str(), resp.status().as_u16(), started);
                            resp
                        }
                        Err(e) => e.into_response(),
                    };
                    resp
                }
            },
        )
}

fn record(route: &'static str, method: &str, status: u16, started: Instant) {
    metrics::counter!("durasaga_http_requests_total", "route" => route, "method" => method.to_owned(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("durasaga_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
}

async fn read_body<S, B>(mut body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::bad("MALFORMED_BODY", e.to_string()))?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect()
}

/// The route template, for metrics (bounded label values).
fn route_name(req: &Request) -> &'static str {
    match segments(&req.path).as_slice() {
        ["health", "live"] => "/health/live",
        ["health", "ready"] => "/health/ready",
        ["customers"] => "/customers",
        ["customers", _] => "/customers/{id}",
        ["customers", _, "orderhistory"] => "/customers/{id}/orderhistory",
        ["sagas"] => "/sagas",
        ["deadletters"] => "/deadletters",
        ["deadletters", _, "redeliver"] => "/deadletters/{id}/redeliver",
        ["orders"] => "/orders",
        ["orders", _] => "/orders/{id}",
        ["orders", _, "history"] => "/orders/{id}/history",
        ["orders", _, "cancel"] => "/orders/{id}/cancel",
        ["sagas", _] => "/sagas/{id}",
        ["sagas", _, "retry"] => "/sagas/{id}/retry",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        _ => "unknown",
    }
}

fn authorized(rt: &Runtime, req: &Request) -> bool {
    let keys = &rt.settings.http.api_keys;
    if keys.is_empty() {
        return true;
    }
    let Some(given) = req
        .headers
        .get(warp::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare against every key without stopping early.
    keys.iter().fold(false, |ok, k| {
        ok | bool::from(k.as_bytes().ct_eq(given.trim().as_bytes()))
    })
}

async fn dispatch(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    use handlers as h;
    let segs = segments(&req.path);
    if !matches!(segs.first(), Some(&"health")) && !authorized(rt, req) {
        return Err(ApiError::Unauthorized);
    }
    let m = &req.method;
    let get = m == Method::GET || m == Method::HEAD;
    let post = m == Method::POST;
    let not_allowed = |allow: &'static str| Err(ApiError::MethodNotAllowed { allow });
    match segs.as_slice() {
        ["health", "live"] if get => h::live().await,
        ["health", "ready"] if get => h::ready(rt).await,
        ["customers"] if post => h::create_customer(rt, req).await,
        ["customers"] if get => h::list_customers(rt, req).await,
        ["customers", id] if get => h::get_customer(rt, req, id).await,
        ["customers", id, "orderhistory"] if get => h::order_history_view(rt, req, id).await,
        ["sagas"] if get => h::list_sagas(rt, req).await,
        ["deadletters"] if get => h::list_deadletters(rt, req).await,
        ["deadletters", id, "redeliver"] if post => h::redeliver_deadletter(rt, req, id).await,
        ["orders"] if post => h::create_order(rt, req).await,
        ["orders"] if get => h::list_orders(rt, req).await,
        ["orders", id] if get => h::get_order(rt, req, id).await,
        ["orders", id, "history"] if get => h::order_history(rt, req, id).await,
        ["orders", id, "cancel"] if post => h::cancel_order(rt, req, id).await,
        ["sagas", id] if get => h::get_saga(rt, req, id).await,
        ["sagas", id, "retry"] if post => h::retry_saga(rt, req, id).await,
        ["metrics"] if get => h::metrics(rt).await,
        ["openapi.json"] if get => h::openapi().await,
        // The routes exist, but not with this method.
        ["health", "live" | "ready"]
        | ["metrics"]
        | ["openapi.json"]
        | ["sagas"]
        | ["deadletters"] => not_allowed("GET"),
        ["customers", _, "orderhistory"] => not_allowed("GET"),
        ["deadletters", _, "redeliver"] => not_allowed("POST"),
        ["customers"] | ["orders"] => not_allowed("GET, POST"),
        ["customers", _] | ["orders", _] | ["orders", _, "history"] | ["sagas", _] => {
            not_allowed("GET")
        }
        ["orders", _, "cancel"] | ["sagas", _, "retry"] => not_allowed("POST"),
        _ => Err(ApiError::NotFound {
            code: "ROUTE_NOT_FOUND",
            message: format!("no route {} {}", m, req.path),
        }),
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(rt))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
