//! A store session for the store tests: the first refresh token's session of "alice", valid
//! for 100 s (its access tokens 10 s) from `now`.

use bo_gateway::auth::refresh::RefreshToken;
use bo_gateway::store::NewSession;

pub fn new_session(first: &RefreshToken, now: u64, user_agent: &str) -> NewSession {
    NewSession {
        id: first.session.clone(),
        login: "alice".into(),
        key_hash: first.proof_hash(),
        secret_hash: first.secret_hash(),
        refresh_expires: now + 100,
        access_expires: now + 10,
        created_at: now,
        client_address: "192.0.2.7".into(),
        user_agent: user_agent.into(),
    }
}
