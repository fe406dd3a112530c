//! The HTTP side of a fetch: one client with connect and read timeouts, retries of
//! transient failures, and the hub's URLs. It builds no path; [`super::cache`] checks what
//! the answers say before the cache is touched.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, IF_NONE_MATCH, LOCATION};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};

use super::error::{ClientError, HttpError, TimeoutPhase};
use super::options::HubOptions;

/// Relative redirects of a `HEAD` followed by hand (the hub sends one when a repository
/// was renamed or its id differs in case).
const MAX_RELATIVE_REDIRECTS: usize = 10;

/// The longest wait between two retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// An HTTP client for one hub.
pub(super) struct Http {
    runtime: tokio::runtime::Runtime,
    /// Follows redirects (downloads: the hub redirects large files to a CDN; reqwest drops
    /// the `Authorization` header when a redirect leaves the host).
    follow: Client,
    /// Follows none: a `HEAD`'s metadata is on the redirect itself.
    no_follow: Client,
    auth: Option<HeaderValue>,
    max_retries: usize,
    retry_base_delay: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Http {
    pub(super) fn new(options: &HubOptions, token: Option<&str>) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        // reqwest's connector needs the runtime's reactor when it is built.
        let _context = runtime.enter();
        let builder = || {
            Client::builder()
                .user_agent(format!("trustgc/{}", env!("CARGO_PKG_VERSION")))
                .connect_timeout(options.connect_timeout)
                .read_timeout(options.read_timeout)
        };
        let follow = builder().build().map_err(ClientError::Http)?;
        let no_follow = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError::Http)?;
        // A token that is not a valid header value cannot be sent; the hub then answers
        // 401, whose error says the token was refused.
        let auth = token.and_then(|token| {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Ok(Self {
            runtime,
            follow,
            no_follow,
            auth,
            max_retries: options.max_retries,
            retry_base_delay: options.retry_base_delay,
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
        })
    }

    /// Whether a token is sent.
    pub(super) fn has_token(&self) -> bool {
        self.auth.is_some()
    }

    /// Which timeout ran out in `error`, and its length; `None` if it is no timeout.
    pub(super) fn timeout_of(&self, error: &HttpError) -> Option<(TimeoutPhase, Duration)> {
        let HttpError::Transport { source, .. } = error else {
            return None;
        };
        if !source.is_timeout() {
            return None;
        }
        Some(if source.is_connect() {
            (TimeoutPhase::Connect, self.connect_timeout)
        } else {
            (TimeoutPhase::Read, self.read_timeout)
        })
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        headers
    }

    /// Sends a request, retrying after connection failures, timeouts and transient
    /// statuses (the last answer is returned as it is).
    fn send(
        &self,
        method: &'static str,
        url: &Url,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let mut attempt = 0;
        loop {
            // Built inside the runtime: the request's timers need its clock.
            let result = self.runtime.block_on(async { request().send().await });
            let transient = match &result {
                Ok(response) => matches!(response.status().as_u16(), 408 | 429 | 500 | 502..=504),
                Err(error) => error.is_timeout() || error.is_connect(),
            };
            if !transient || attempt >= self.max_retries {
                return result.map_err(|source| HttpError::Transport {
                    method,
                    url: url.to_string(),
                    source,
                });
            }
            let delay = self
                .retry_base_delay
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_RETRY_DELAY);
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    /// `HEAD url`, following relative redirects only; any status is returned.
    pub(super) fn head(
        &self,
        url: &Url,
        if_none_match: Option<&str>,
    ) -> Result<Response, HttpError> {
        let mut headers = self.headers();
        if let Some(etag) = if_none_match
            && let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\""))
        {
            headers.insert(IF_NONE_MATCH, value);
        }
        let mut url = url.clone();
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let response = self.send("HEAD", &url, || {
                self.no_follow.head(url.clone()).headers(headers.clone())
            })?;
            let relative = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .filter(|l| is_relative_location(l));
            if response.status().is_redirection()
                && let Some(location) = relative
                && let Ok(next) = url.join(location)
                && same_origin(&url, &next)
            {
                url = next;
                continue;
            }
            return Ok(response);
        }
        Err(HttpError::MissingHeader {
            method: "HEAD",
            url: url.to_string(),
            header: "an end to its relative redirects",
        })
    }

    /// `GET url`, following redirects; an error status is an error.
    pub(super) fn get(&self, url: &Url) -> Result<Response, HttpError> {
        let response = self.send("GET", url, || {
            self.follow.get(url.clone()).headers(self.headers())
        })?;
        if !response.status().is_success() {
            return Err(HttpError::Status {
                method: "GET",
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    /// The next piece of a body (`None` at its end).
    pub(super) fn chunk(
        &self,
        response: &mut Response,
        url: &Url,
    ) -> Result<Option<impl std::ops::Deref<Target = [u8]> + use<>>, HttpError> {
        self.runtime
            .block_on(response.chunk())
            .map_err(|source| HttpError::Transport {
                method: "GET",
                url: url.to_string(),
                source,
            })
    }

    /// `GET url` of an API route: `false` on 404, `true` on success.
    pub(super) fn exists(&self, url: &Url) -> Result<bool, HttpError> {
        let response = self.send("GET", url, || {
            self.follow.get(url.clone()).headers(self.headers())
        })?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(HttpError::Status {
                method: "GET",
                url: url.to_string(),
                status: s.as_u16(),
            }),
        }
    }
}

/// Whether `next` has the scheme, host and port of `current` (a `Location` such as
/// `\\other.host/x` parses as relative but joins onto another host).
fn same_origin(current: &Url, next: &Url) -> bool {
    current.scheme() == next.scheme()
        && current.host_str() == next.host_str()
        && current.port_or_known_default() == next.port_or_known_default()
}

/// A `Location` without scheme and host.
fn is_relative_location(location: &str) -> bool {
    Url::parse(location) == Err(url::ParseError::RelativeUrlWithoutBase)
        && !location.starts_with("//")
}

/// `endpoint` followed by `segments`, each one path segment (percent-encoded, `/`
/// included).
pub(super) fn url_with(endpoint: &Url, segments: &[&str]) -> Url {
    let mut url = endpoint.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Parses the endpoint: an `http` or `https` URL with a host.
pub(super) fn parse_endpoint(endpoint: &str) -> Result<Url, ClientError> {
    let url = Url::parse(endpoint.trim_end_matches('/')).map_err(ClientError::Url)?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || !url.has_host() {
        return Err(ClientError::NotHttp);
    }
    Ok(url)
}

/// A header's value as text, if it is there and is text.
pub(super) fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_redirects_stay_on_the_host() {
        let base = Url::parse("http://127.0.0.1:8080/org/repo/resolve/main/config.json").unwrap();
        for location in ["/api/x", "x", "../y"] {
            assert!(is_relative_location(location), "{location}");
            assert!(
                same_origin(&base, &base.join(location).unwrap()),
                "{location}"
            );
        }
        for location in ["\\\\evil.example/x", "/\\evil.example/x"] {
            let joined = base.join(location).unwrap();
            assert!(
                !(is_relative_location(location) && same_origin(&base, &joined)),
                "{location} leads to {joined}"
            );
        }
    }
}
