//! The messages that cross service boundaries and the versioned envelope that
//! carries them.
//!
//! Invariant: every payload names the order it concerns, so a receiver can make
//! its handling idempotent per order; envelope ids are unique per message and
//! are the unit of deduplication at the receiver's inbox.

use super::ids::{CustomerId, OrderId, SagaId};
use super::money::Money;
use super::order::OrderState;
use super::Millis;
use serde::{Deserialize, Serialize};

/// The current envelope schema version. Bump it when a payload changes shape.
pub const SCHEMA_VERSION: u16 = 1;

/// A service that owns a datastore and receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Service {
    Customer,
    Order,
    Saga,
    /// The order-history read model (CQRS); fed by Order and Customer events.
    View,
}

impl Service {
    /// Lower-case name, used for directories, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::Customer => "customer",
            Service::Order => "order",
            Service::Saga => "saga",
            Service::View => "view",
        }
    }
}

/// Where a message goes: a service and one of its entities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    pub service: Service,
    pub entity: String,
}

impl Address {
    pub fn customer(id: &CustomerId) -> Self {
        Self {
            service: Service::Customer,
            entity: id.as_str().to_owned(),
        }
    }
    pub fn order(id: &OrderId) -> Self {
        Self {
            service: Service::Order,
            entity: id.as_str().to_owned(),
        }
    }
    pub fn saga(id: &SagaId) -> Self {
        Self {
            service: Service::Saga,
            entity: id.as_str().to_owned(),
        }
    }
    /// The order-history view of a customer.
    pub fn view(customer: &CustomerId) -> Self {
        Self {
            service: Service::View,
            entity: customer.as_str().to_owned(),
        }
    }
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectionReason {
    InsufficientCredit,
    UnknownCustomer,
    CreditCheckTimeout,
}

impl RejectionReason {
    /// The wire name, e.g. `INSUFFICIENT_CREDIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::InsufficientCredit => "INSUFFICIENT_CREDIT",
            RejectionReason::UnknownCustomer => "UNKNOWN_CUSTOMER",
            RejectionReason::CreditCheckTimeout => "CREDIT_CHECK_TIMEOUT",
        }
    }
}

/// Commands, replies and events exchanged between services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    // --- to the Customer service -------------------------------------------
    /// Reserve `amount` of the customer's credit for `order_id`.
    ReserveCredit {
        order_id: OrderId,
        customer_id: CustomerId,
        amount: Money,
    },
    /// Compensation: release whatever `order_id` holds (idempotent).
    ReleaseCredit {
        order_id: OrderId,
        customer_id: CustomerId,
    },
    // --- replies of the Customer service -----------------------------------
    CreditReserved {
        order_id: OrderId,
    },
    CreditLimitExceeded {
        order_id: OrderId,
    },
    CustomerNotFound {
        order_id: OrderId,
    },
    CreditReleased {
        order_id: OrderId,
    },
    // --- to the Order service ----------------------------------------------
    ApproveOrder {
        order_id: OrderId,
    },
    RejectOrder {
        order_id: OrderId,
        reason: RejectionReason,
    },
    CancelOrder {
        order_id: OrderId,
    },
    // --- replies of the Order service --------------------------------------
    OrderApproved {
        order_id: OrderId,
    },
    OrderRejected {
        order_id: OrderId,
        reason: RejectionReason,
    },
    OrderCancelled {
        order_id: OrderId,
    },
    /// The order refused a command (illegal transition); the saga fails visibly.
    OrderCommandRefused {
        order_id: OrderId,
        error: String,
    },
    // --- to the Saga service -----------------------------------------------
    /// Start the CreateOrder saga for a freshly created PENDING order.
    StartCreateOrder {
        order_id: OrderId,
        customer_id: CustomerId,
        total: Money,
    },
    /// Start the CancelOrder saga for an APPROVED order.
    StartCancelOrder {
        order_id: OrderId,
        customer_id: CustomerId,
    },
    // --- events for the order-history view ---------------------------------
    /// A customer was created.
    CustomerRegistered {
        customer_id: CustomerId,
        name: String,
        credit_limit: Money,
    },
    /// An order's state after its event `seq` (the fold up to there).
    OrderChanged {
        order_id: OrderId,
        customer_id: CustomerId,
        total: Money,
        state: OrderState,
        reason: Option<RejectionReason>,
        seq: u64,
    },
}

impl Payload {
    /// The order a message concerns (`None` for customer registrations).
    pub fn order_id(&self) -> Option<&OrderId> {
        match self {
            Payload::CustomerRegistered { .. } => None,
            Payload::OrderChanged { order_id, .. } => Some(order_id),
            Payload::ReserveCredit { order_id, .. }
            | Payload::ReleaseCredit { order_id, .. }
            | Payload::CreditReserved { order_id }
            | Payload::CreditLimitExceeded { order_id }
            | Payload::CustomerNotFound { order_id }
            | Payload::CreditReleased { order_id }
            | Payload::ApproveOrder { order_id }
            | Payload::RejectOrder { order_id, .. }
            | Payload::CancelOrder { order_id }
            | Payload::OrderApproved { order_id }
            | Payload::OrderRejected { order_id, .. }
            | Payload::OrderCancelled { order_id }
            | Payload::OrderCommandRefused { order_id, .. }
            | Payload::StartCreateOrder { order_id, .. }
            | Payload::StartCancelOrder { order_id, .. } => Some(order_id),
        }
    }

    /// The message kind as written in the envelope and in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::ReserveCredit { .. } => "ReserveCredit",
            Payload::ReleaseCredit { .. } => "ReleaseCredit",
            Payload::CreditReserved { .. } => "CreditReserved",
            Payload::CreditLimitExceeded { .. } => "CreditLimitExceeded",
            Payload::CustomerNotFound { .. } => "CustomerNotFound",
            Payload::CreditReleased { .. } => "CreditReleased",
            Payload::ApproveOrder { .. } => "ApproveOrder",
            Payload::RejectOrder { .. } => "RejectOrder",
            Payload::CancelOrder { .. } => "CancelOrder",
            Payload::OrderApproved { .. } => "OrderApproved",
            Payload::OrderRejected { .. } => "OrderRejected",
            Payload::OrderCancelled { .. } => "OrderCancelled",
            Payload::OrderCommandRefused { .. } => "OrderCommandRefused",
            Payload::StartCreateOrder { .. } => "StartCreateOrder",
            Payload::StartCancelOrder { .. } => "StartCancelOrder",
            Payload::CustomerRegistered { .. } => "CustomerRegistered",
            Payload::OrderChanged { .. } => "OrderChanged",
        }
    }
}

/// A message in transit or at rest in an outbox, inbox or dead-letter store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7 as a big-endian u128; unique per message, kept across redeliveries.
    pub id: u128,
    /// `Payload::kind()`, kept so a reader that cannot decode the payload can still say what it was.
    pub kind: String,
    pub schema_version: u16,
    pub from: Address,
    pub to: Address,
    /// The saga this message belongs to; also the tracing correlation id.
    pub correlation: String,
    /// Where the answer should go, if one is expected.
    pub reply_to: Option<Address>,
    /// Which attempt of the sender produced this message (1-based).
    pub attempt: u32,
    pub sent_at: Millis,
    pub payload: Payload,
}
