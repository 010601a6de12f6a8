//! The one error type: each failure's status, SPEC §3 code and message, decided here once
//! (`crate::body` writes the response from them). A leaf: it imports no other module.

use http::{HeaderValue, StatusCode};

/// Every error the gateway itself answers with. The `Display` text is for logs; the client sees
/// only [`GatewayError::code`] and [`GatewayError::message`].
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("wrong login or password")]
    BadCredentials,
    #[error("user is disabled")]
    UserDisabled,
    #[error("too many failed logins; retry after {retry_after_secs}s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("no token")]
    TokenMissing,
    #[error("invalid token: {0}")]
    TokenInvalid(&'static str),
    /// Only `exp` has passed (beyond the leeway): TraderEvolution's own code, on which BO
    /// clients refresh. Logs and metrics name it `token.expired` ([`GatewayError::reason`]).
    #[error("token expired")]
    TokenExpired,
    #[error("refresh token reused; session revoked")]
    TokenReused,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body too large")]
    TooLarge,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("no route for this request")]
    NoRoute,
    /// The admin API names a session the store does not know (404 with `route.none`).
    #[error("unknown session")]
    UnknownSession,
    #[error("method not allowed")]
    MethodNotAllowed { allow: HeaderValue },
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("credential service unavailable: {0}")]
    CredentialsUnavailable(String),
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("upstream connection limit reached")]
    UpstreamBusy,
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            BadCredentials | UserDisabled | TokenMissing | TokenInvalid(_) | TokenExpired | TokenReused => {
                StatusCode::UNAUTHORIZED
            }
            TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Malformed(_) => StatusCode::BAD_REQUEST,
            TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            NoRoute | UnknownSession => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Forbidden(_) => StatusCode::FORBIDDEN,
            CredentialsUnavailable(_) | StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            BadCredentials => "1.2.0.11",
            UserDisabled => "2.0.2.4",
            TooManyAttempts { .. } => "2.147.1.27",
            TokenMissing => "token.missing",
            TokenInvalid(_) => "token.invalid",
            TokenExpired => "1.1.1.11",
            TokenReused => "token.reused",
            Malformed(_) => "request.malformed",
            TooLarge | HeadTooLarge => "request.too_large",
            NoRoute | UnknownSession => "route.none",
            MethodNotAllowed { .. } => "method.not_allowed",
            Forbidden(_) => "forbidden",
            CredentialsUnavailable(_) => "credentials.unavailable",
            UpstreamUnavailable(_) => "upstream.unavailable",
            UpstreamTimeout => "upstream.timeout",
            UpstreamBusy => "upstream.busy",
            StoreUnavailable(_) => "store.unavailable",
            Internal(_) => "internal",
        }
    }

    /// What logs and metrics call the outcome: the code, except where one code covers a reason
    /// worth telling apart (an expired token is `1.1.1.11` to the client, `token.expired` here).
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::TokenExpired => "token.expired",
            e => e.code(),
        }
    }

    /// The sentence the client reads. Never carries internal detail (that goes to the log).
    pub fn message(&self) -> &'static str {
        use GatewayError::*;
        match self {
            BadCredentials => "Wrong login or password.",
            UserDisabled => "This user is disabled.",
            TooManyAttempts { .. } => "Too many failed attempts; try again later.",
            TokenMissing => "A Bearer token is required.",
            TokenInvalid(_) => "The token is invalid.",
            TokenExpired => "The token has expired.",
            TokenReused => "The refresh token was already used; the session has been revoked.",
            Malformed(_) => "The request is malformed.",
            TooLarge => "The request body is too large.",
            HeadTooLarge => "The request's header section is too large.",
            NoRoute => "No route matches this request.",
            UnknownSession => "No such session.",
            MethodNotAllowed { .. } => "This method is not allowed on this route.",
            Forbidden(_) => "You are not allowed to do this.",
            CredentialsUnavailable(_) => "The credential service is unavailable.",
            UpstreamUnavailable(_) => "The upstream service is unavailable.",
            UpstreamTimeout => "The upstream service did not answer in time.",
            UpstreamBusy => "The upstream service has no free connection; try again shortly.",
            StoreUnavailable(_) => "The session store is unavailable.",
            Internal(_) => "Internal error.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn every_error_maps_to_spec_status_and_code() {
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (GatewayError::BadCredentials, 401, "1.2.0.11"),
            (GatewayError::UserDisabled, 401, "2.0.2.4"),
            (GatewayError::TooManyAttempts { retry_after_secs: 3 }, 429, "2.147.1.27"),
            (GatewayError::TokenMissing, 401, "token.missing"),
            (GatewayError::TokenInvalid("x"), 401, "token.invalid"),
            (GatewayError::TokenExpired, 401, "1.1.1.11"),
            (GatewayError::TokenReused, 401, "token.reused"),
            (GatewayError::Malformed("x".into()), 400, "request.malformed"),
            (GatewayError::TooLarge, 413, "request.too_large"),
            (GatewayError::HeadTooLarge, 431, "request.too_large"),
            (GatewayError::NoRoute, 404, "route.none"),
            (GatewayError::UnknownSession, 404, "route.none"),
            (
                GatewayError::MethodNotAllowed { allow: HeaderValue::from_static("GET") },
                405,
                "method.not_allowed",
            ),
            (GatewayError::Forbidden("x"), 403, "forbidden"),
            (GatewayError::CredentialsUnavailable("x".into()), 503, "credentials.unavailable"),
            (GatewayError::UpstreamUnavailable("x".into()), 502, "upstream.unavailable"),
            (GatewayError::UpstreamTimeout, 504, "upstream.timeout"),
            (GatewayError::UpstreamBusy, 503, "upstream.busy"),
            (GatewayError::StoreUnavailable("x".into()), 503, "store.unavailable"),
            (GatewayError::Internal("x".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.code(), code);
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert!(resp.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
        }
    }

    #[test]
    fn an_expired_token_has_the_vendor_code_and_its_own_reason() {
        let e = GatewayError::TokenExpired;
        assert_eq!((e.code(), e.reason()), ("1.1.1.11", "token.expired"));
        assert_eq!(GatewayError::TokenInvalid("x").reason(), "token.invalid");
        assert!(!e.to_string().is_empty());
        let r = e.into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
    }

    #[test]
    fn headers_that_statuses_require() {
        let r = GatewayError::TokenMissing.into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = GatewayError::TooManyAttempts { retry_after_secs: 42 }.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "42");
        let r =
            GatewayError::MethodNotAllowed { allow: HeaderValue::from_static("GET, POST") }.into_response();
        assert_eq!(r.headers()[header::ALLOW], "GET, POST");
    }
}
