//! Request and response bodies, and their validation into domain types.
//! Validation happens here, once, at the edge: what passes holds only valid
//! values.

use super::error::ApiError;
use crate::actors::OrderView;
use crate::domain::saga::SagaState;
use crate::domain::{Customer, CustomerId, Millis, Money};
use serde::Deserialize;
use serde_json::{json, Value};

/// `{"amount": "12.34"}` (a number is accepted too).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyDto {
    pub amount: Value,
}

impl MoneyDto {
    fn parse(&self, field: &str) -> Result<Money, ApiError> {
        let text = match &self.amount {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::field(
                    field,
                    "amount must be a decimal string such as \"12.34\"",
                ))
            }
        };
        text.parse::<Money>()
            .map_err(|e| ApiError::field(field, e.to_string()))
    }
}

/// Body of `POST /customers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateCustomerDto {
    pub name: Value,
    pub credit_limit: MoneyDto,
}

/// A validated `POST /customers`.
pub struct NewCustomer {
    pub name: String,
    pub credit_limit: Money,
}

impl TryFrom<CreateCustomerDto> for NewCustomer {
    type Error = ApiError;
    fn try_from(d: CreateCustomerDto) -> Result<Self, ApiError> {
        let Value::String(name) = d.name else {
            return Err(ApiError::field("name", "name must be a string"));
        };
        let n = name.trim().chars().count();
        if n == 0 || name.chars().count() > 200 {
            return Err(ApiError::field("name", "name must be 1 to 200 characters"));
        }
        if name.chars().any(|c| c.is_control()) {
            return Err(ApiError::field(
                "name",
                "name must not contain control characters",
            ));
        }
        Ok(NewCustomer {
            name,
            credit_limit: d.credit_limit.parse("creditLimit.amount")?,
        })
    }
}

/// Body of `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateOrderDto {
    pub customer_id: Value,
    pub order_total: MoneyDto,
}

/// A validated `POST /orders`.
pub struct NewOrder {
    pub customer_id: CustomerId,
    pub total: Money,
}

/// An id given as a string or an integer.
pub fn parse_id(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err(ApiError::field(
            field,
            format!("{field} must be a string or an integer"),
        )),
    }
}

impl TryFrom<CreateOrderDto> for NewOrder {
    type Error = ApiError;
    fn try_from(d: CreateOrderDto) -> Result<Self, ApiError> {
        let id = parse_id(&d.customer_id, "customerId")?;
        let customer_id =
            CustomerId::parse(id).map_err(|e| ApiError::field("customerId", e.to_string()))?;
        Ok(NewOrder {
            customer_id,
            total: d.order_total.parse("orderTotal.amount")?,
        })
    }
}

/// RFC 3339, UTC, microseconds.
pub fn time(ms: Millis) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into milliseconds.
pub fn parse_time(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

pub fn money(m: Money) -> Value {
    json!({"amount": m.to_string()})
}

pub fn customer(c: &Customer) -> Value {
    json!({
        "customerId": c.id.as_str(),
        "name": c.name,
        "creditLimit": money(c.credit_limit),
        "availableCredit": money(c.available_credit()),
    })
}

pub fn order(v: &OrderView) -> Value {
    let o = &v.order;
    json!({
        "orderId": o.id.as_str(),
        "customerId": o.customer_id.as_str(),
        "orderTotal": money(o.total),
        "orderState": o.state.as_str(),
        "rejectionReason": o.rejection_reason.map(|r| r.as_str()),
        "sagaId": v.saga_id,
        "createdAt": time(o.created_at),
        "updatedAt": time(o.updated_at),
    })
}

pub fn saga(s: &SagaState) -> Value {
    json!({
        "sagaId": s.id.as_str(),
        "kind": s.kind.as_str(),
        "orderId": s.order_id.as_str(),
        "customerId": s.customer_id.as_str(),
        "state": s.phase.as_str(),
        "step": s.phase.as_str(),
        "attempt": s.attempt,
        "deadline": s.deadline.map(time),
        "inBackoff": s.in_backoff,
        "rejectionReason": s.reason.map(|r| r.as_str()),
        "error": s.error,
        "startedAt": time(s.started_at),
        "updatedAt": time(s.updated_at),
        "history": s.history.iter().map(|h| json!({
            "at": time(h.at),
            "state": h.phase.as_str(),
            "attempt": h.attempt,
            "cause": h.cause,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_microseconds() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20.123000Z");
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn ids_may_be_integers() {
        assert_eq!(
            parse_id(&json!(9223372036854775807i64), "x").unwrap(),
            "9223372036854775807"
        );
        assert!(parse_id(&json!(1.5), "x").is_err());
        assert!(parse_id(&json!(null), "x").is_err());
    }
}
