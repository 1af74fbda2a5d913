//! Money: a non-negative decimal amount with at most two places, bounded.
//!
//! Invariant: a `Money` value always has scale 2, is `>= 0` and `<= MAX`, so
//! arithmetic on it is checked and can report overflow instead of panicking.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why an amount is not valid money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is not a decimal number")]
    NotANumber,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount has more than two decimal places")]
    TooPrecise,
    #[error("amount is larger than 1000000000000.00")]
    TooLarge,
    #[error("amount arithmetic overflowed")]
    Overflow,
}

/// A non-negative amount of money with two decimal places. Stored as whole
/// cents (an `i64`), which every serde format, bincode included, can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Money(Decimal);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(Decimal::from_parts(0, 0, 0, false, 2));

    /// The largest amount accepted: one trillion.
    pub fn max() -> Decimal {
        Decimal::new(100_000_000_000_000, 2)
    }

    /// Validates a decimal: non-negative, at most two places, at most `max()`.
    pub fn new(d: Decimal) -> Result<Self, MoneyError> {
        if d.is_sign_negative() && !d.is_zero() {
            return Err(MoneyError::Negative);
        }
        let n = d.normalize();
        if n.scale() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        if n > Self::max() {
            return Err(MoneyError::TooLarge);
        }
        let mut v = n.abs();
        v.rescale(2);
        Ok(Money(v))
    }

    /// Whole cents, for tests and generators.
    pub fn from_cents(cents: u64) -> Result<Self, MoneyError> {
        let c = i64::try_from(cents).map_err(|_| MoneyError::TooLarge)?;
        Self::new(Decimal::new(c, 2))
    }

    /// The underlying decimal (always scale 2).
    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// `self + other`, or an error if the sum leaves the valid range.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        let s = self.0.checked_add(other.0).ok_or(MoneyError::Overflow)?;
        Money::new(s).map_err(|_| MoneyError::Overflow)
    }

    /// `self - other`, or an error if the result would be negative.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        let s = self.0.checked_sub(other.0).ok_or(MoneyError::Overflow)?;
        Money::new(s).map_err(|_| MoneyError::Negative)
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.len() > 40 || t.contains(['e', 'E']) {
            return Err(MoneyError::NotANumber);
        }
        let d = Decimal::from_str_exact(t).map_err(|_| MoneyError::NotANumber)?;
        Money::new(d)
    }
}

impl TryFrom<Decimal> for Money {
    type Error = MoneyError;
    fn try_from(d: Decimal) -> Result<Self, Self::Error> {
        Money::new(d)
    }
}

impl TryFrom<i64> for Money {
    type Error = MoneyError;
    fn try_from(cents: i64) -> Result<Self, Self::Error> {
        if cents < 0 {
            return Err(MoneyError::Negative);
        }
        Money::new(Decimal::new(cents, 2))
    }
}

impl From<Money> for i64 {
    fn from(m: Money) -> i64 {
        // Always scale 2 and at most 10^14 cents, so the mantissa fits.
        m.0.mantissa() as i64
    }
}

impl From<Money> for Decimal {
    fn from(m: Money) -> Decimal {
        m.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Result<Money, MoneyError> {
        s.parse()
    }

    #[test]
    fn parses_and_prints_two_places() {
        assert_eq!(m("12.34").unwrap().to_string(), "12.34");
        assert_eq!(m("15").unwrap().to_string(), "15.00");
        assert_eq!(m("0.1").unwrap().to_string(), "0.10");
        assert_eq!(m("1.500").unwrap().to_string(), "1.50");
        assert_eq!(m("0").unwrap(), Money::ZERO);
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(m("-1.00"), Err(MoneyError::Negative));
        assert_eq!(m("1.234"), Err(MoneyError::TooPrecise));
        assert_eq!(m("1000000000000.01"), Err(MoneyError::TooLarge));
        assert_eq!(m("abc"), Err(MoneyError::NotANumber));
        assert_eq!(m("1e5"), Err(MoneyError::NotANumber));
        assert_eq!(m(""), Err(MoneyError::NotANumber));
    }

    #[test]
    fn serialises_as_cents() {
        let v = m("12.34").unwrap();
        assert_eq!(i64::from(v), 1234);
        assert_eq!(Money::try_from(1234i64).unwrap(), v);
        assert_eq!(i64::from(m("7").unwrap()), 700);
        assert_eq!(Money::try_from(-1i64), Err(MoneyError::Negative));
        assert_eq!(serde_json::to_string(&v).unwrap(), "1234");
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Money::new(Money::max()).unwrap();
        assert_eq!(
            max.checked_add(m("0.01").unwrap()),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            m("1").unwrap().checked_sub(m("2").unwrap()),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            m("1.25")
                .unwrap()
                .checked_add(m("2.50").unwrap())
                .unwrap()
                .to_string(),
            "3.75"
        );
    }
}
