//! Arbitrary bytes into the stored-value decoder
//! (`durasaga::persistence::codec::decode::<T>`) for every type durasaga keeps
//! in sled: envelopes (inboxes), the entity records of the four services, and
//! dead letters.
//!
//! Properties checked on every input, for every type:
//! 1. `decode` never panics, whatever the bytes (it returns `Err` instead);
//! 2. whatever decodes re-encodes, and the re-encoding decodes to the same
//!    value (a value read from disk survives being written back unchanged);
//! 3. what the rest of the program does with a decoded value — folding an
//!    order's events, rendering customers, orders and sagas as API JSON,
//!    building the view event — does not panic either: a corrupt-but-decodable
//!    record must not take the process down.
#![no_main]

use durasaga::actors::{logic, OrderView};
use durasaga::domain::saga::SagaState;
use durasaga::domain::{Customer, CustomerHistory, Envelope};
use durasaga::http::dto;
use durasaga::persistence::codec::{decode, encode};
use durasaga::persistence::deadletters::DeadLetter;
use durasaga::persistence::{EntityRecord, OrderRecord};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Decodes `data` as `T`; if it decodes, checks the round trip and hands the
/// value to `use_it`.
fn check<T>(what: &str, data: &[u8], use_it: impl FnOnce(&T))
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let Ok(value) = decode::<T>(data) else {
        return;
    };
    let bytes = match encode(&value) {
        Ok(b) => b,
        Err(e) => panic!("{what}: decoded value does not re-encode: {e}\nvalue: {value:?}"),
    };
    match decode::<T>(&bytes) {
        Ok(again) => assert_eq!(again, value, "{what}: re-encoded value decodes differently"),
        Err(e) => panic!("{what}: re-encoded value does not decode: {e}\nvalue: {value:?}"),
    }
    use_it(&value);
}

fn use_envelope(e: &Envelope) {
    let _ = e.payload.order_id();
    let _ = e.payload.kind();
    let _ = format!("{e:?}");
}

fn use_outbox<S>(r: &EntityRecord<S>) {
    for e in &r.outbox {
        use_envelope(e);
    }
    let _ = r.has_seen(0);
}

fuzz_target!(|data: &[u8]| {
    check::<Envelope>("Envelope", data, use_envelope);

    check::<EntityRecord<Customer>>("EntityRecord<Customer>", data, |r| {
        use_outbox(r);
        if let Some(c) = &r.state {
            let _ = c.available_credit();
            let _ = c.reservations().count();
            let _ = dto::customer(c).to_string();
        }
    });

    check::<EntityRecord<OrderRecord>>("EntityRecord<OrderRecord>", data, |r| {
        use_outbox(r);
        if let Some(rec) = &r.state {
            let _ = logic::order_changed(rec);
            if let Some(order) = logic::fold(rec) {
                let view = OrderView {
                    order,
                    saga_id: rec.saga_id.clone(),
                    events: rec.events.clone(),
                };
                let _ = dto::order(&view).to_string();
            }
            for e in &rec.events {
                let _ = dto::time(e.at);
                let _ = e.event.type_name();
            }
        }
    });

    check::<EntityRecord<SagaState>>("EntityRecord<SagaState>", data, |r| {
        use_outbox(r);
        if let Some(s) = &r.state {
            let _ = dto::saga(s).to_string();
        }
    });

    check::<EntityRecord<CustomerHistory>>("EntityRecord<CustomerHistory>", data, |r| {
        use_outbox(r);
        if let Some(h) = &r.state {
            for (id, o) in &h.orders {
                let _ = (id.as_str(), o.state.as_str(), dto::money(o.total));
            }
            let _ = h.credit_limit.map(dto::money);
        }
    });

    check::<DeadLetter>("DeadLetter", data, |d| {
        let _ = format!("{:032x}", d.id);
        let _ = dto::time(d.at);
        if let Some(e) = &d.envelope {
            use_envelope(e);
        }
    });
});
