//! The route table: which origin a WebSocket upgrade goes to, by Host and path prefix.
//!
//! A [`RouteTable`] is immutable once built and carries a version; workers hold it behind an
//! `Arc` and swap in a whole new table on change, so a lookup never takes a lock and an open
//! tunnel keeps the origin it resolved.
//!
//! Matching: the longest path prefix wins, where a prefix matches at a segment boundary
//! (`/db` matches `/db` and `/db/x`, not `/dbx`). A route may also require a Host header and a
//! TLS server name (SNI); among the routes of the longest prefix whose requirements the request
//! meets, one requiring both wins, then one requiring the Host, then one requiring the SNI, then
//! one requiring neither. The query string is not part of the path (the handshake strips it).
//! Lookup costs one hash probe per path segment, whatever the table size.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One route: where tunnels whose request matches go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Name for logs and metrics (defaults to the path prefix, with the host if any).
    pub name: String,
    /// Host header to match (lowercase, no port); `None` matches any host.
    pub host: Option<String>,
    /// TLS server name (SNI) to match (lowercase); `None` matches any connection, `wss://` or
    /// not. A route with one never matches a plain `ws://` connection.
    pub sni: Option<String>,
    /// Path prefix, starting with `/`.
    pub path: String,
    /// The TCP origin (a pool's first origin).
    pub origin: SocketAddr,
    /// Close a tunnel after this long without bytes in either direction; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Several origins to choose from, when the route has a pool.
    pub pool: Option<OriginPool>,
    /// Tunnels the route may hold at once (past it, new ones get 503); `None`: no limit.
    pub max_tunnels: Option<u32>,
}

/// A route's origins and how one is chosen for each tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPool {
    /// In the order written; the route's `origin` is the first.
    pub origins: Vec<PoolOrigin>,
    pub policy: Policy,
    /// Percent of the pool that may be out (ejected) at once; past it every origin is used again
    /// (so ejections never add up to a total outage).
    pub max_ejected_percent: u8,
    /// When a connect that has not completed starts a race with the next origin.
    pub race: Race,
    /// Active health checks of its origins, if any.
    pub check: Option<HealthCheck>,
    /// Connections kept connected to each origin (over all workers), so a tunnel skips the
    /// connect; 0: none.
    pub warm: u32,
    /// A warm connection older than this is replaced.
    pub warm_max_age: Duration,
}

/// An active health check: every `interval`, each worker connects to each origin of the pool
/// and, for [`CheckKind::Postgres`], asks it to start TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    /// A check that has not passed within this fails.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// The TCP connect completes.
    Tcp,
    /// A PostgreSQL `SSLRequest` is answered with `S` or `N`: the server accepts connections
    /// and starts backends (no credentials needed, nothing logged by the server).
    Postgres,
}

/// Connect racing: a connect not answered within a delay starts one to the next origin in
/// order, and the first to complete carries the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Race {
    /// Never: a connect waits for its answer or the connect timeout.
    Off,
    /// After twice the pool's typical (median of its origins' p90) connect time, within bounds.
    Auto,
    /// After this long.
    After(Duration),
}

/// One origin of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOrigin {
    pub addr: SocketAddr,
    /// Chosen only when no other origin of the pool is eligible.
    pub backup: bool,
    /// Tunnels open to it at once; `None`: no limit.
    pub max_connections: Option<u32>,
    /// New connections to it per second; `None`: no limit.
    pub max_new_per_second: Option<u32>,
}

/// How a pool picks the origin of a new tunnel (the others follow in order if it fails).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The first healthy origin in the order written (a primary and its standby).
    Failover,
    /// The healthy origin with the fewest open tunnels (read replicas).
    LeastConnections,
    /// The less loaded of two healthy origins drawn at random (read replicas, many edges).
    PowerOfTwoChoices,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "failover" => Some(Policy::Failover),
            "least-connections" => Some(Policy::LeastConnections),
            "power-of-two-choices" => Some(Policy::PowerOfTwoChoices),
            _ => None,
        }
    }
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The path does not start with `/`.
    BadPath(String),
    /// Two routes have the same host and path.
    Duplicate(String),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::BadPath(p) => write!(f, "route path {p:?} must start with '/'"),
            RouteError::Duplicate(p) => write!(f, "route {p:?} is defined twice"),
        }
    }
}

impl std::error::Error for RouteError {}

#[derive(Clone, Debug)]
struct Candidate {
    host: Option<String>,
    sni: Option<String>,
    route: usize,
}

impl Candidate {
    /// Higher is more specific: both, then Host, then SNI, then neither.
    fn rank(&self) -> u8 {
        2 * u8::from(self.host.is_some()) + u8::from(self.sni.is_some())
    }

    fn accepts(&self, host: Option<&str>, sni: Option<&str>) -> bool {
        (self.host.is_none() || self.host.as_deref() == host)
            && (self.sni.is_none() || self.sni.as_deref() == sni)
    }
}

/// An immutable, versioned set of routes.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    version: u64,
    routes: Vec<Route>,
    /// Path prefix → the routes with that prefix: (host, sni, index into `routes`), most
    /// specific first.
    index: HashMap<String, Vec<Candidate>>,
}

impl RouteTable {
    /// Builds a table; paths are normalised by dropping a trailing `/` (except the root).
    pub fn new(version: u64, routes: Vec<Route>) -> Result<RouteTable, RouteError> {
        let mut index = HashMap::with_capacity(routes.len());
        let mut routes = routes;
        for (i, r) in routes.iter_mut().enumerate() {
            if !r.path.starts_with('/') {
                return Err(RouteError::BadPath(r.path.clone()));
            }
            while r.path.len() > 1 && r.path.ends_with('/') {
                r.path.pop();
            }
            if let Some(h) = &mut r.host {
                *h = h.to_ascii_lowercase();
            }
            if let Some(n) = &mut r.sni {
                *n = n.to_ascii_lowercase();
            }
            let same_path: &mut Vec<Candidate> = index.entry(r.path.clone()).or_default();
            if same_path.iter().any(|c| c.host == r.host && c.sni == r.sni) {
                return Err(RouteError::Duplicate(r.name.clone()));
            }
            same_path.push(Candidate {
                host: r.host.clone(),
                sni: r.sni.clone(),
                route: i,
            });
            same_path.sort_by_key(|c| std::cmp::Reverse(c.rank()));
        }
        Ok(RouteTable {
            version,
            routes,
            index,
        })
    }

    /// The version this table was built with.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// All routes, in the order given.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for a request, with its index in [`RouteTable::routes`].
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        self.lookup_sni(host, None, path)
    }

    /// The route for a request that came over a connection with TLS server name `sni`
    /// (lowercase; `None` for plain `ws://` or a client that sent none).
    pub fn lookup_sni(
        &self,
        host: Option<&str>,
        sni: Option<&str>,
        path: &str,
    ) -> Option<(usize, &Route)> {
        let path = path.split('?').next().unwrap_or(path);
        let mut end = path.len();
        loop {
            let prefix = if end == 0 { "/" } else { &path[..end] };
            if let Some(candidates) = self.index.get(prefix) {
                if let Some(c) = candidates.iter().find(|c| c.accepts(host, sni)) {
                    return Some((c.route, &self.routes[c.route]));
                }
            }
            if end == 0 {
                return None;
            }
            end = path[..end].rfind('/').unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, port: u16) -> Route {
        Route {
            name: path.to_string(),
            host: host.map(str::to_string),
            sni: None,
            path: path.to_string(),
            origin: SocketAddr::from(([127, 0, 0, 1], port)),
            idle_timeout: None,
            pool: None,
            max_tunnels: None,
        }
    }

    #[test]
    fn longest_prefix_at_segment_boundary() {
        let t = RouteTable::new(
            1,
            vec![
                route(None, "/db", 1),
                route(None, "/db/replica/", 2),
                route(Some("Api.Example"), "/db", 3),
            ],
        )
        .unwrap();
        let port = |h, p| t.lookup(h, p).map(|(_, r)| r.origin.port());
        assert_eq!(port(None, "/db"), Some(1));
        assert_eq!(port(None, "/db/x"), Some(1));
        assert_eq!(port(None, "/db/replica"), Some(2));
        assert_eq!(port(None, "/db/replica/9"), Some(2));
        assert_eq!(port(None, "/dbx"), None);
        assert_eq!(port(None, "/"), None);
        assert_eq!(port(Some("api.example"), "/db/1"), Some(3));
        assert_eq!(port(Some("other"), "/db"), Some(1));
        assert_eq!(port(None, "/db?address=x:5432"), Some(1));
    }

    #[test]
    fn sni_routes_match_only_their_server_name_and_rank_below_host() {
        let with_sni = |host: Option<&str>, sni: &str, port| Route {
            sni: Some(sni.to_string()),
            ..route(host, "/db", port)
        };
        let t = RouteTable::new(
            1,
            vec![
                route(None, "/db", 1),
                with_sni(None, "DB.example", 2),
                route(Some("h"), "/db", 3),
                with_sni(Some("h"), "db.example", 4),
            ],
        )
        .unwrap();
        let port = |h, sni, p| t.lookup_sni(h, sni, p).map(|(_, r)| r.origin.port());
        assert_eq!(
            port(None, None, "/db"),
            Some(1),
            "plain ws:// never takes an SNI route"
        );
        assert_eq!(port(None, Some("db.example"), "/db/x"), Some(2));
        assert_eq!(port(None, Some("other"), "/db"), Some(1));
        assert_eq!(port(Some("h"), None, "/db"), Some(3));
        assert_eq!(
            port(Some("h"), Some("db.example"), "/db"),
            Some(4),
            "both beat one"
        );
        assert_eq!(port(Some("h"), Some("other"), "/db"), Some(3));
        assert!(matches!(
            RouteTable::new(1, vec![with_sni(None, "a", 1), with_sni(None, "A", 2)]),
            Err(RouteError::Duplicate(_))
        ));
    }

    #[test]
    fn root_route_catches_all() {
        let t = RouteTable::new(1, vec![route(None, "/", 7)]).unwrap();
        assert_eq!(
            t.lookup(None, "/anything/at/all").unwrap().1.origin.port(),
            7
        );
        assert_eq!(t.lookup(None, "/").unwrap().1.origin.port(), 7);
    }

    #[test]
    fn rejects_bad_and_duplicate_paths() {
        assert!(matches!(
            RouteTable::new(1, vec![route(None, "db", 1)]),
            Err(RouteError::BadPath(_))
        ));
        assert!(matches!(
            RouteTable::new(1, vec![route(None, "/db", 1), route(None, "/db/", 2)]),
            Err(RouteError::Duplicate(_))
        ));
    }
}
