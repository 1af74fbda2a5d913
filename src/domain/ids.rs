//! Entity identifiers as newtypes that can only hold valid ids.
//!
//! An id is 1–64 characters of `[A-Za-z0-9_.:-]`. The character set keeps ids
//! safe to embed in storage keys (no `/`) and in URLs without escaping.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must not be empty")]
    Empty,
    #[error("id must be at most 64 characters")]
    TooLong,
    #[error("id may only contain letters, digits, '_', '.', ':' and '-'")]
    BadCharacter,
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > 64 {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Decoding validates too: a stored or received id is always valid.
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a customer of the Customer service.
    CustomerId
);
id_type!(
    /// Identifies an order of the Order service.
    OrderId
);
id_type!(
    /// Identifies one saga instance of the Saga service.
    SagaId
);

impl SagaId {
    /// The CreateOrder saga of an order has the order's id.
    pub fn create_order(order: &OrderId) -> Self {
        Self(order.0.clone())
    }
    /// The CancelOrder saga of an order is the order's id with `:cancel`.
    pub fn cancel_order(order: &OrderId) -> Self {
        Self(format!("{}:cancel", order.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_parse() {
        assert_eq!(
            CustomerId::parse("abc-12_3.x:y").unwrap().as_str(),
            "abc-12_3.x:y"
        );
        assert!(OrderId::parse("9223372036854775807").is_ok());
    }

    #[test]
    fn invalid_ids_are_refused() {
        assert_eq!(CustomerId::parse(""), Err(IdError::Empty));
        assert_eq!(CustomerId::parse("a".repeat(65)), Err(IdError::TooLong));
        assert_eq!(CustomerId::parse("a/b"), Err(IdError::BadCharacter));
        assert_eq!(CustomerId::parse("a b"), Err(IdError::BadCharacter));
        assert_eq!(CustomerId::parse("é"), Err(IdError::BadCharacter));
    }

    #[test]
    fn decoding_validates() {
        assert!(serde_json::from_str::<OrderId>("\"o-1\"").is_ok());
        assert!(serde_json::from_str::<OrderId>("\"ord/r 1\"").is_err());
    }

    #[test]
    fn saga_ids_derive_from_the_order() {
        let o = OrderId::parse("o1").unwrap();
        assert_eq!(SagaId::create_order(&o).as_str(), "o1");
        assert_eq!(SagaId::cancel_order(&o).as_str(), "o1:cancel");
    }
}
