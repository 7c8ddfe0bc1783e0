//! Unit tests of config parsing: every refusal names the key and the line and, where there is
//! one, the spelling that works.

use super::*;

const LISTENER: &str = "[[listener]]\naddr = \"127.0.0.1:8080\"\n";

/// The error for `text`, which must be refused.
fn refused(text: &str) -> String {
    Config::parse(text, "t.toml").unwrap_err().0
}

/// A config with the listener on lines 1-2 and one route on lines 3-6 with `host` (line 6).
fn with_host(host: &str) -> String {
    format!("{LISTENER}[[route]]\npath = \"/db\"\norigin = \"127.0.0.1:5432\"\nhost = {host:?}\n")
}

/// A config with the listener on lines 1-2 and one route on lines 3-5 with `path` (line 4).
fn with_path(path: &str) -> String {
    format!("{LISTENER}[[route]]\npath = {path:?}\norigin = \"127.0.0.1:5432\"\n")
}

#[test]
fn smallest_config_parses() {
    let c = Config::parse(
        "[[listener]]\naddr = \"127.0.0.1:8080\"\n\n[[route]]\npath = \"/db\"\norigin = \"127.0.0.1:5432\"\n",
        "t.toml",
    )
    .unwrap();
    let addrs: Vec<_> = c.listeners.iter().map(|l| l.addr).collect();
    assert_eq!(addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert!(c.listeners[0].tls.is_none());
    assert_eq!(c.routes.routes()[0].origin.port(), 5432);
    assert_eq!(c.tunnel().handshake_timeout, Duration::from_secs(10));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = refused("[[listener]]\naddr = \"127.0.0.1:1\"\nbogus = 1\n");
    assert!(e.contains("bogus") && e.contains("line 3"), "{e}");
}

#[test]
fn bad_value_names_key_and_line() {
    let e = refused("\n[[listener]]\naddr = \"nope\"\n");
    assert!(e.contains("listener.addr") && e.contains("line 3"), "{e}");
    let e = refused(
        "[[listener]]\naddr = \"127.0.0.1:1\"\n[[route]]\npath = \"db\"\norigin = \"127.0.0.1:1\"\n",
    );
    assert!(e.contains("route.path") && e.contains("line 4"), "{e}");
    let e = refused("[timeouts]\nhandshake_ms = \"x\"\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn host_with_a_port_is_refused_with_the_host_alone() {
    for (host, fix) in [
        ("localhost:8183", "localhost"),
        ("Example.COM:443", "Example.COM"),
        ("[::1]:8080", "[::1]"),
    ] {
        let e = refused(&with_host(host));
        assert!(
            e.starts_with("t.toml: line 6: `route.host`: ") && e.contains("without its port"),
            "{e}"
        );
        assert!(e.contains(&format!("write host = {fix:?}")), "{e}");
    }
}

#[test]
fn host_with_a_scheme_user_or_path_is_refused_with_the_host_alone() {
    for (host, why) in [
        ("https://example.com", "no scheme"),
        ("wss://example.com:8443/db", "no scheme"),
        ("user@example.com", "no user info"),
        ("example.com/x", "no path"),
        ("example.com?x=1", "no path, query"),
    ] {
        let e = refused(&with_host(host));
        assert!(e.contains("line 6: `route.host`") && e.contains(why), "{e}");
        assert!(e.contains("write host = \"example.com\""), "{e}");
    }
}

#[test]
fn empty_blank_and_malformed_hosts_are_refused() {
    let e = refused(&with_host(""));
    assert!(
        e.contains("line 6: `route.host`") && e.contains("leave `host` out"),
        "{e}"
    );
    let e = refused(&with_host(" example.com"));
    assert!(
        e.contains("whitespace") && e.contains("write host = \"example.com\""),
        "{e}"
    );
    let e = refused(&with_host("exa mple.com"));
    assert!(e.contains("whitespace") && !e.contains("write host"), "{e}");
    let e = refused(&with_host("::1"));
    assert!(
        e.contains("in brackets") && e.contains("write host = \"[::1]\""),
        "{e}"
    );
    let e = refused(&with_host("[nope]"));
    assert!(
        e.contains("line 6: `route.host`") && e.contains("IPv6"),
        "{e}"
    );
    let e = refused(&with_host("bücher.example"));
    assert!(e.contains("xn--"), "{e}");
    let e = refused(&with_host("a<b"));
    assert!(e.contains("'<'"), "{e}");
}

#[test]
fn hosts_a_request_can_carry_are_accepted_in_any_case() {
    // The handshake lowercases the Host header and the route table lowercases route hosts.
    for host in [
        "Example.COM",
        "10.0.0.1",
        "[::1]",
        "[2001:DB8::1]",
        "my_host.local.",
    ] {
        let c = Config::parse(&with_host(host), "t.toml").unwrap();
        let want = host.to_ascii_lowercase();
        assert_eq!(c.routes.routes()[0].host.as_deref(), Some(&*want));
    }
}

#[test]
fn path_with_a_query_or_fragment_is_refused_with_the_path_alone() {
    let e = refused(&with_path("/db?x=1"));
    assert!(
        e.starts_with("t.toml: line 4: `route.path`: ") && e.contains("query string"),
        "{e}"
    );
    assert!(e.contains("write path = \"/db\""), "{e}");
    let e = refused(&with_path("/db#a"));
    assert!(e.contains("line 4") && e.contains("fragment"), "{e}");
    assert!(e.contains("write path = \"/db\""), "{e}");
}

#[test]
fn path_not_as_clients_send_it_is_refused_with_their_spelling() {
    let e = refused(&with_path("db"));
    assert!(
        e.contains("line 4: `route.path`") && e.contains("starts with '/'"),
        "{e}"
    );
    assert!(e.contains("write path = \"/db\""), "{e}");
    let e = refused(&with_path("/my db"));
    assert!(e.contains("line 4") && e.contains("percent-encoded"), "{e}");
    assert!(e.contains("write path = \"/my%20db\""), "{e}");
    let e = refused(&with_path("/café"));
    assert!(e.contains("write path = \"/caf%C3%A9\""), "{e}");
    let e = refused(&with_path("/a/../db"));
    assert!(
        e.contains("`..`") && e.contains("write path = \"/db\""),
        "{e}"
    );
    for ok in ["/", "/db", "/db/", "/a%20b", "/x/y-z_1.2~"] {
        Config::parse(&with_path(ok), "t.toml").unwrap();
    }
}

#[test]
fn zero_routes_is_a_warning_not_an_error() {
    let c = Config::parse(LISTENER, "t.toml").unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("no `[[route]]`") && c.warnings[0].contains("404"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn unavailable_cpu_names_key_line_and_the_available_cpus() {
    let text = "# pinning\nworkers = [1, 7]\n";
    let src = Source {
        text,
        file: "t.toml",
    };
    let raw: RawConfig = toml::from_str(text).unwrap();
    let workers = raw.workers.unwrap();
    let e = cpus(&src, &workers, Some(&[0, 1])).unwrap_err().0;
    assert!(e.starts_with("t.toml: line 2: `workers`: CPU 7 "), "{e}");
    assert!(e.contains("available CPUs: 0-1"), "{e}");
    let pinned = cpus(&src, &workers, Some(&[1, 7])).unwrap();
    assert_eq!(pinned, vec![Some(1), Some(7)]);
    // The real affinity mask: CPU 100000 exists on no machine.
    let e = refused(&format!("workers = [100000]\n{LISTENER}"));
    assert!(e.contains("line 1: `workers`: CPU 100000"), "{e}");
}

#[test]
fn workers_errors_name_the_line() {
    let e = refused(&format!("\nworkers = 0\n{LISTENER}"));
    assert!(e.contains("line 2: `workers`: must be at least 1"), "{e}");
    let e = refused(&format!("\nworkers = []\n{LISTENER}"));
    assert!(e.contains("line 2: `workers`: lists no CPU"), "{e}");
}

#[test]
fn cpu_ranges_are_compact() {
    assert_eq!(cpu_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
    assert_eq!(cpu_ranges(&[3]), "3");
    assert_eq!(cpu_ranges(&[]), "none");
}

#[test]
fn duplicate_routes_name_both_lines_as_written() {
    let route = |path: &str, host: Option<&str>| {
        let host = host.map_or(String::new(), |h| format!("host = {h:?}\n"));
        format!("[[route]]\npath = {path:?}\norigin = \"127.0.0.1:1\"\n{host}")
    };
    // Lines 1-2 listener, 3-5 first route (path on 4), 6-8 second (path on 7).
    let text = format!("{LISTENER}{}{}", route("/db", None), route("/db/", None));
    let e = refused(&text);
    assert!(e.starts_with("t.toml: line 7: `route.path`: "), "{e}");
    assert!(
        e.contains("route path = \"/db/\" is the same route as path = \"/db\" at line 4"),
        "{e}"
    );
    let text = format!(
        "{LISTENER}{}{}",
        route("/db", Some("A.example")),
        route("/db", Some("a.EXAMPLE"))
    );
    let e = refused(&text);
    assert!(e.contains("line 8"), "{e}");
    assert!(
        e.contains(
            "route host = \"a.EXAMPLE\", path = \"/db\" is the same route as \
             host = \"A.example\", path = \"/db\" at line 4"
        ),
        "{e}"
    );
    let text = format!("{LISTENER}{}{}", route("/db", None), route("/db", None));
    let e = refused(&text);
    assert!(
        e.ends_with(
            "route path = \"/db\" is the same route as path = \"/db\" at line 4; remove one"
        ),
        "{e}"
    );
    // The same path with and without a host is two routes.
    let text = format!(
        "{LISTENER}{}{}",
        route("/db", None),
        route("/db", Some("a"))
    );
    Config::parse(&text, "t.toml").unwrap();
}

#[test]
fn single_bracket_listener_or_route_explains_the_array_of_tables() {
    let e = refused("workers = 1\n[listener]\naddr = \"127.0.0.1:1\"\n");
    assert_eq!(
        e,
        "t.toml: line 2: `[listener]` is a single table; listeners are an array of tables: \
         write `[[listener]]`"
    );
    let e = refused(&format!(
        "{LISTENER}\n[route]\npath = \"/db\"\norigin = \"127.0.0.1:1\"\n"
    ));
    assert_eq!(
        e,
        "t.toml: line 4: `[route]` is a single table; routes are an array of tables: \
         write `[[route]]`"
    );
}

#[test]
fn tls_files_resolve_against_the_config_directory() {
    let c = Config::parse(
        "[[listener]]\naddr = \"127.0.0.1:8443\"\ntls = { cert = \"edge.crt\", key = \"/abs/edge.key\" }\n\n[[route]]\npath = \"/db\"\norigin = \"127.0.0.1:5432\"\n",
        "/etc/ringway/ringway.toml",
    )
    .unwrap();
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(
        tls.default.cert,
        std::path::Path::new("/etc/ringway/edge.crt")
    );
    assert_eq!(tls.default.key, std::path::Path::new("/abs/edge.key"));
    assert_eq!(c.listeners[0].tls_line, 3);
}

#[test]
fn tls_sni_entries_need_names_and_unknown_tls_keys_are_refused() {
    let base = "[[listener]]\naddr = \"127.0.0.1:8443\"\n[listener.tls]\ncert = \"a.crt\"\nkey = \"a.key\"\n";
    let ok = format!("{base}[[listener.tls.sni]]\nnames = [\"DB.example.com\"]\ncert = \"b.crt\"\nkey = \"b.key\"\n");
    let c = Config::parse(&ok, "t.toml").unwrap();
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.sni[0].0, vec!["db.example.com".to_string()]);
    let none =
        format!("{base}[[listener.tls.sni]]\nnames = []\ncert = \"b.crt\"\nkey = \"b.key\"\n");
    let e = Config::parse(&none, "t.toml").unwrap_err().to_string();
    assert!(
        e.contains("listener.tls.sni.names") && e.contains("line 3"),
        "{e}"
    );
    let typo = format!("{base}certificate = \"x\"\n");
    let e = Config::parse(&typo, "t.toml").unwrap_err().to_string();
    assert!(e.contains("certificate") && e.contains("line 6"), "{e}");
}

#[test]
fn routes_may_match_on_sni_and_duplicates_count_it() {
    let two = "[[listener]]\naddr = \"127.0.0.1:8443\"\n\n[[route]]\npath = \"/db\"\nsni = \"DB.example\"\norigin = \"127.0.0.1:5432\"\n\n[[route]]\npath = \"/db\"\norigin = \"127.0.0.1:5433\"\n";
    let c = Config::parse(two, "t.toml").unwrap();
    let r = &c.routes.routes()[0];
    assert_eq!(r.sni.as_deref(), Some("db.example"));
    assert_eq!(r.name, "/db (sni db.example)");
    let dup = format!(
        "{two}\n[[route]]\npath = \"/db/\"\nsni = \"db.EXAMPLE\"\norigin = \"127.0.0.1:1\"\n"
    );
    let e = Config::parse(&dup, "t.toml").unwrap_err().to_string();
    assert!(
        e.contains("line 5") && e.contains("sni = \"db.EXAMPLE\""),
        "{e}"
    );
    let bad = two.replace("DB.example", "db.example:443");
    let e = Config::parse(&bad, "t.toml").unwrap_err().to_string();
    assert!(e.contains("route.sni") && e.contains("line 6"), "{e}");
}
