//! The Bearer check of SPEC §2: the only way a request becomes [`Authenticated`]. It borrows
//! what it reads (the token cache, the revocations, the snapshot in service, the outcome
//! counter): nothing is allocated, locked or reference-counted per request on the way.

use arc_swap::ArcSwap;
use http::HeaderMap;

use super::cache::{Revocations, TokenCache};
use super::tokens::{self, Authenticated};
use crate::error::GatewayError;
use crate::metrics::Outcomes;
use crate::runtime::Runtime;

pub struct Bearer<'a> {
    /// The snapshot in service now, which a reload may have swapped since a request began.
    pub in_service: &'a ArcSwap<Runtime>,
    pub cache: &'a TokenCache,
    pub revocations: &'a Revocations,
    /// Checks by outcome (`bo_gateway_auth`).
    pub outcomes: &'a Outcomes,
}

impl Bearer<'_> {
    /// The check of a request's `Authorization` headers.
    pub fn check(&self, rt: &Runtime, headers: &HeaderMap) -> Result<Authenticated, GatewayError> {
        self.verify(rt, tokens::bearer_value(headers))
    }

    /// The check from the first `Authorization` value's bytes and how many values there were
    /// (the fast path has no header map).
    pub fn check_value(
        &self,
        rt: &Runtime,
        value: Option<&[u8]>,
        count: usize,
    ) -> Result<Authenticated, GatewayError> {
        self.verify(rt, tokens::bearer_in(value, count))
    }

    fn verify(
        &self,
        rt: &Runtime,
        bearer: Result<&str, GatewayError>,
    ) -> Result<Authenticated, GatewayError> {
        let result = bearer.and_then(|token| self.verify_current(rt, token));
        self.outcomes.add(result.as_ref().map_or_else(|e| e.reason(), |_| "ok"));
        result
    }

    /// Verifies `token` with the keys in service when the answer is given, which are not those
    /// of the request's snapshot `rt` if a reload completed since the request began (a held
    /// request must not pass with a key the reload removed). If a reload completes while a
    /// verification runs, it runs again with the new keys; the cache keys its entries by key-set
    /// generation, so whatever the old verification inserted does not count for the new keys.
    fn verify_current(&self, rt: &Runtime, token: &str) -> Result<Authenticated, GatewayError> {
        let verify = |rt: &Runtime| {
            tokens::verify(
                token,
                &rt.keys,
                &rt.token_settings,
                self.cache,
                self.revocations,
                tokens::now_secs(),
            )
        };
        let result = verify(rt);
        if self.in_service.load().keys.generation == rt.keys.generation {
            return result;
        }
        loop {
            let current = self.in_service.load_full();
            let result = verify(&current);
            if self.in_service.load().keys.generation == current.keys.generation {
                return result;
            }
        }
    }
}
