//! Request handlers: one function per route, no routing here. Each validates
//! its input (via `dto`), calls the [`Runtime`], and shapes the answer.

use super::dto::{self, CreateCustomerDto, CreateOrderDto, NewCustomer, NewOrder};
use super::error::ApiError;
use super::Request;
use crate::actors::{OrderFilter, OrderView, Runtime};
use crate::domain::{Order, OrderId, OrderState};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(body.to_string().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn created(location: String, body: &Value) -> Response {
    let mut resp = json_response(StatusCode::CREATED, body);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Parses a JSON body into `T`, checking the content type first.
pub fn parse_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let ct = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad("MALFORMED_JSON", format!("malformed JSON: {e}"))
            }
            Category::Data => {
                let msg = e.to_string();
                let code = if msg.contains("unknown field") {
                    "UNKNOWN_FIELD"
                } else {
                    "INVALID_REQUEST"
                };
                ApiError::bad(code, msg)
            }
        }
    })
}

/// Query parameters, refusing any this route does not know.
pub fn query(req: &Request, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let raw = req.query.as_deref().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::bad("INVALID_QUERY", e.to_string()))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::bad(
                "UNKNOWN_PARAMETER",
                format!("unknown query parameter {k:?}"),
            ));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn limit(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(100),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                "INVALID_QUERY",
                "limit must be an integer from 1 to 1000",
            )),
        },
    }
}

/// `Prefer: wait=N` in seconds, capped by the configuration.
fn prefer_wait(req: &Request, max: u64) -> Result<Option<Duration>, ApiError> {
    for v in req.headers.get_all("prefer") {
        let s = v
            .to_str()
            .map_err(|_| ApiError::bad("INVALID_HEADER", "Prefer header is not text"))?;
        for token in s.split([',', ';']) {
            let t = token.trim();
            if let Some(n) = t.strip_prefix("wait=") {
                let secs: f64 = n
                    .trim()
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        ApiError::bad("INVALID_HEADER", "Prefer: wait=N takes a number of seconds")
                    })?;
                return Ok(Some(Duration::from_secs_f64(secs.min(max as f64))));
            }
        }
    }
    Ok(None)
}

/// The `Idempotency-Key` header: 1–200 visible ASCII characters.
fn idempotency_key(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| ApiError::bad("INVALID_HEADER", "Idempotency-Key must be visible ASCII"))?;
    if k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad(
            "INVALID_HEADER",
            "Idempotency-Key must be 1 to 200 visible ASCII characters",
        ));
    }
    Ok(Some(k.to_owned()))
}

fn path_id(s: &str, what: &'static str) -> Result<String, ApiError> {
    crate::domain::OrderId::parse(s)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::NotFound {
            code: not_found_code(what),
            message: format!("{what} not found"),
        })
}

fn not_found_code(what: &str) -> &'static str {
    match what {
        "customer" => "CUSTOMER_NOT_FOUND",
        "order" => "ORDER_NOT_FOUND",
        _ => "SAGA_NOT_FOUND",
    }
}

fn not_found(what: &'static str) -> ApiError {
    ApiError::NotFound {
        code: not_found_code(what),
        message: format!("{what} not found"),
    }
}

fn list(items_key: &str, items: Vec<Value>, next: Option<String>) -> Response {
    let mut body = json!({ items_key: items });
    if let Some(n) = next {
        body["next"] = Value::String(n);
    }
    json_response(StatusCode::OK, &body)
}

// ------------------------------------------------------------------ health

pub async fn live() -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &json!({"status": "live"})))
}

pub async fn ready(rt: &Runtime) -> Result<Response, ApiError> {
    if rt.is_ready() {
        Ok(json_response(StatusCode::OK, &json!({"status": "ready"})))
    } else {
        Err(ApiError::NotReady)
    }
}

// --------------------------------------------------------------- customers

/// `POST /customers`
pub async fn create_customer(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    let new = NewCustomer::try_from(parse_body::<CreateCustomerDto>(req)?)?;
    let key = idempotency_key(req)?;
    let c = rt
        .create_customer(new.name, new.credit_limit, key.as_deref())
        .await?;
    let mut body = dto::customer(&c);
    body["customerId"] = Value::String(c.id.to_string());
    Ok(created(format!("/customers/{}", c.id), &body))
}

/// `GET /customers`
pub async fn list_customers(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    let q = query(req, &["limit", "after"])?;
    let (items, next) = rt
        .list_customers(q.get("after").map(String::as_str), limit(&q)?)
        .await?;
    Ok(list(
        "customers",
        items.iter().map(dto::customer).collect(),
        next,
    ))
}

/// `GET /customers/{id}`
pub async fn get_customer(rt: &Runtime, req: &Request, id: &str) -> Result<Response, ApiError> {
    query(req, &[])?;
    let id = path_id(id, "customer")?;
    let c = rt
        .get_customer(&id)
        .await?
        .ok_or_else(|| not_found("customer"))?;
    Ok(json_response(StatusCode::OK, &dto::customer(&c)))
}

// ------------------------------------------------------------------ orders

/// `POST /orders`
pub async fn create_order(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    let wait = prefer_wait(req, rt.settings.http.max_wait_seconds)?;
    let new = NewOrder::try_from(parse_body::<CreateOrderDto>(req)?)?;
    let key = idempotency_key(req)?;
    let mut view = rt
        .create_order(new.customer_id, new.total, key.as_deref())
        .await?;
    if let Some(w) = wait {
        if let Some(v) = rt
            .wait_order_after(&view, w, |v| v.order.state.is_settled())
            .await?
        {
            view = v;
        }
    }
    Ok(created(
        format!("/orders/{}", view.order.id),
        &dto::order(&view),
    ))
}

/// `GET /orders`
pub async fn list_orders(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    let q = query(req, &["limit", "after", "customerId", "state"])?;
    let state = match q.get("state") {
        None => None,
        Some(s) => Some(OrderState::parse(s).ok_or_else(|| {
            ApiError::bad(
                "INVALID_QUERY",
                "state must be PENDING, APPROVED, REJECTED or CANCELLED",
            )
        })?),
    };
    let filter = OrderFilter {
        customer_id: q.get("customerId").cloned(),
        state,
    };
    let (items, next) = rt
        .list_orders(&filter, q.get("after").map(String::as_str), limit(&q)?)
        .await?;
    Ok(list("orders", items.iter().map(dto::order).collect(), next))
}

/// `GET /orders/{id}` (`Prefer: wait=N`, `?asOf=`)
pub async fn get_order(rt: &Runtime, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q = query(req, &["asOf"])?;
    let id = path_id(id, "order")?;
    let view = match prefer_wait(req, rt.settings.http.max_wait_seconds)? {
        Some(w) => {
            rt.wait_order(&id, w, None, |v| v.order.state.is_settled())
                .await?
        }
        None => rt.get_order(&id).await?,
    };
    let view = view.ok_or_else(|| not_found("order"))?;
    let Some(as_of) = q.get("asOf") else {
        return Ok(json_response(StatusCode::OK, &dto::order(&view)));
    };
    let at = dto::parse_time(as_of)
        .ok_or_else(|| ApiError::bad("INVALID_QUERY", "asOf must be an RFC 3339 time"))?;
    let past: Vec<_> = view.events.iter().filter(|e| e.at <= at).cloned().collect();
    let order = Order::fold(&view.order.id, &past).ok_or_else(|| not_found("order"))?;
    let then = OrderView {
        order,
        saga_id: view.saga_id.clone(),
        events: past,
    };
    Ok(json_response(StatusCode::OK, &dto::order(&then)))
}

/// `GET /orders/{id}/history`
pub async fn order_history(rt: &Runtime, req: &Request, id: &str) -> Result<Response, ApiError> {
    query(req, &[])?;
    let id = path_id(id, "order")?;
    let view = rt.get_order(&id).await?.ok_or_else(|| not_found("order"))?;
    let events: Vec<Value> = view
        .events
        .iter()
        .map(|e| {
            let data = match &e.event {
                crate::domain::OrderEvent::OrderCreated { customer_id, total } => {
                    json!({"customerId": customer_id.as_str(), "orderTotal": dto::money(*total)})
                }
                crate::domain::OrderEvent::OrderRejected { reason } => {
                    json!({"rejectionReason": reason.as_str()})
                }
                _ => json!({}),
            };
            json!({"seq": e.seq, "type": e.event.type_name(), "at": dto::time(e.at), "data": data})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"orderId": id, "events": events}),
    ))
}

/// `POST /orders/{id}/cancel`
pub async fn cancel_order(rt: &Runtime, req: &Request, id: &str) -> Result<Response, ApiError> {
    query(req, &[])?;
    let wait = prefer_wait(req, rt.settings.http.max_wait_seconds)?;
    let oid = OrderId::parse(id).map_err(|_| not_found("order"))?;
    let mut view = rt.cancel_order(&oid).await?;
    if let Some(w) = wait {
        if let Some(v) = rt
            .wait_order_after(&view, w, |v| v.order.state == OrderState::Cancelled)
            .await?
        {
            view = v;
        }
    }
    Ok(json_response(StatusCode::OK, &dto::order(&view)))
}

// ------------------------------------------------------------------- sagas

/// `GET /sagas/{id}`
pub async fn get_saga(rt: &Runtime, req: &Request, id: &str) -> Result<Response, ApiError> {
    query(req, &[])?;
    let id = path_id(id, "saga")?;
    let s = rt.get_saga(&id).await?.ok_or_else(|| not_found("saga"))?;
    Ok(json_response(StatusCode::OK, &dto::saga(&s)))
}

/// `POST /sagas/{id}/retry`
pub async fn retry_saga(rt: &Runtime, req: &Request, id: &str) -> Result<Response, ApiError> {
    query(req, &[])?;
    let id = path_id(id, "saga")?;
    let s = rt.retry_saga(&id).await?;
    Ok(json_response(StatusCode::OK, &dto::saga(&s)))
}

// ----------------------------------------------------------------- metrics

/// `GET /metrics`
pub async fn metrics(rt: &Runtime) -> Result<Response, ApiError> {
    let (c, o, s) = rt.active_actors();
    metrics::gauge!("durasaga_active_actors", "service" => "customer").set(c as f64);
    metrics::gauge!("durasaga_active_actors", "service" => "order").set(o as f64);
    metrics::gauge!("durasaga_active_actors", "service" => "saga").set(s as f64);
    metrics::gauge!("durasaga_orders_in_flight").set(rt.store.order.active_count() as f64);
    metrics::gauge!("durasaga_saga_timer_hold_seconds").set(rt.saga_timer_hold_seconds());
    metrics::gauge!("durasaga_saga_timer_held_sagas").set(rt.saga_timer_held_sagas() as f64);
    metrics::gauge!("durasaga_inbox_depth", "service" => "customer")
        .set(rt.customers.total_depth() as f64);
    metrics::gauge!("durasaga_inbox_depth", "service" => "order")
        .set(rt.orders.total_depth() as f64);
    metrics::gauge!("durasaga_inbox_depth", "service" => "saga").set(rt.sagas.total_depth() as f64);
    for (name, db) in rt.flush_stats() {
        metrics::gauge!("durasaga_flushes", "db" => name).set(db.0 as f64);
        metrics::gauge!("durasaga_flush_waiters", "db" => name).set(db.1 as f64);
        metrics::gauge!("durasaga_flush_busy_seconds", "db" => name).set(db.2 as f64 / 1e6);
    }
    let text = crate::metrics::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut resp = Response::new(text.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET /openapi.json`
pub async fn openapi() -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &super::openapi::document()))
}

// ------------------------------------------------------------------- views

/// `GET /customers/{id}/orderhistory`
pub async fn order_history_view(
    rt: &Runtime,
    req: &Request,
    id: &str,
) -> Result<Response, ApiError> {
    query(req, &[])?;
    let id = path_id(id, "customer")?;
    let v = rt
        .order_history_view(&id)
        .await?
        .ok_or_else(|| not_found("customer"))?;
    let orders: Vec<Value> = v
        .orders
        .iter()
        .map(|(oid, o)| {
            json!({
                "orderId": oid.as_str(),
                "orderState": o.state.as_str(),
                "orderTotal": dto::money(o.total),
                "rejectionReason": o.reason.map(|r| r.as_str()),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "customerId": v.customer_id.as_str(),
            "name": v.name,
            "creditLimit": v.credit_limit.map(dto::money),
            "orders": orders,
        }),
    ))
}

// ------------------------------------------------------------------- admin

/// `GET /sagas?state&olderThan&limit&after`
pub async fn list_sagas(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    let q = query(req, &["state", "olderThan", "limit", "after"])?;
    let phase = match q.get("state") {
        None => None,
        Some(s) => Some(crate::domain::SagaPhase::parse(s).ok_or_else(|| {
            ApiError::bad(
                "INVALID_QUERY",
                "state must be one of RESERVING_CREDIT, RELEASING_CREDIT, APPROVING_ORDER, REJECTING_ORDER, \
                 CANCELLING_ORDER, PAUSED, APPROVED, REJECTED, CANCELLED, FAILED",
            )
        })?),
    };
    let before = match q.get("olderThan") {
        None => None,
        Some(s) => Some(older_than(s)?),
    };
    let (items, next) = rt
        .list_sagas(
            phase,
            before,
            q.get("after").map(String::as_str),
            limit(&q)?,
        )
        .await?;
    Ok(list("sagas", items.iter().map(dto::saga).collect(), next))
}

/// `olderThan`: an RFC 3339 time, or an age in seconds (`300`, `300s`).
fn older_than(s: &str) -> Result<crate::domain::Millis, ApiError> {
    if let Some(t) = dto::parse_time(s) {
        return Ok(t);
    }
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| {
            ApiError::bad(
                "INVALID_QUERY",
                "olderThan must be an RFC 3339 time or a number of seconds",
            )
        })?;
    Ok(crate::actors::entity::now_millis() - (secs * 1000.0) as i64)
}

fn deadletter_json(svc: crate::domain::Service, d: &crate::actors::DeadLetterView) -> Value {
    json!({
        "id": format!("{:032x}", d.id),
        "service": svc.name(),
        "entity": d.entity,
        "kind": d.envelope.as_ref().map(|e| e.kind.clone()),
        "sagaId": d.envelope.as_ref().map(|e| e.correlation.clone()),
        "error": d.error,
        "attempts": d.attempts,
        "at": dto::time(d.at),
    })
}

fn deadletter_id(s: &str) -> Result<u128, ApiError> {
    u128::from_str_radix(s, 16).map_err(|_| ApiError::NotFound {
        code: "DEAD_LETTER_NOT_FOUND",
        message: "dead letter not found".into(),
    })
}

/// `GET /deadletters?limit&after`
pub async fn list_deadletters(rt: &Runtime, req: &Request) -> Result<Response, ApiError> {
    let q = query(req, &["limit", "after"])?;
    let after = match q.get("after") {
        None => None,
        Some(a) => Some(
            u128::from_str_radix(a, 16)
                .map_err(|_| ApiError::bad("INVALID_QUERY", "after is not a cursor"))?,
        ),
    };
    let (items, next) = rt.list_deadletters(after, limit(&q)?).await?;
    Ok(list(
        "deadletters",
        items.iter().map(|(s, d)| deadletter_json(*s, d)).collect(),
        next,
    ))
}

/// `POST /deadletters/{id}/redeliver`
pub async fn redeliver_deadletter(
    rt: &Runtime,
    req: &Request,
    id: &str,
) -> Result<Response, ApiError> {
    query(req, &[])?;
    let (svc, d) = rt.redeliver_deadletter(deadletter_id(id)?).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"redelivered": deadletter_json(svc, &d)}),
    ))
}
