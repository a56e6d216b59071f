//! Unit tests of [`super`].
use super::*;

use crate::config::Config;

fn config(args: &[&str]) -> Config {
    use clap::Parser;
    let mut all = vec!["wsgate"];
    all.extend_from_slice(args);
    Config::parse_from(all)
}

fn from_flags(c: &Config) -> Namespaces {
    Namespaces::load(c.default_namespace(), &c.private_room_prefix, None).unwrap()
}

fn with_file(args: &[&str], text: &str) -> Result<Namespaces, String> {
    let mut ns = from_flags(&config(args));
    ns.add_file(text)?;
    Ok(ns)
}

#[test]
fn every_option_parses_and_the_rest_come_from_the_flags() {
    let ns = with_file(
        &["--history-len", "77", "--presence-max-members", "50"],
        r#"
        [namespaces.live]
        presence = "count"
        presence_max_members = 9
        history_len = 100
        history_ttl = "1h"
        client_publish = false
        private = true
        max_members = 100000
        webhook_client_messages = true

        [namespaces.quiet]
        presence = "off"
        history_ttl = 30
        "#,
    )
    .unwrap();
    let live = ns.for_room("live:final");
    assert_eq!(
        live,
        &NamespaceOptions {
            presence: PresenceMode::Count,
            presence_max_members: 9,
            history_len: 100,
            history_ttl_s: 3600,
            client_publish: false,
            private: true,
            max_members: Some(100_000),
            webhook_client_messages: true,
        }
    );
    let quiet = ns.for_room("quiet:x");
    assert_eq!(quiet.presence, PresenceMode::Off);
    assert!(
        !quiet.webhook_client_messages,
        "from --webhook-client-messages"
    );
    assert_eq!(quiet.history_ttl_s, 30);
    assert_eq!(quiet.history_len, 77, "from --history-len");
    assert_eq!(
        quiet.presence_max_members, 50,
        "from --presence-max-members"
    );
    assert!(quiet.client_publish && !quiet.private && quiet.max_members.is_none());
    let rules = ns.rules("live:a");
    assert_eq!(rules.history_ttl, Duration::from_secs(3600));
    assert_eq!(rules.max_members, Some(100_000));
}

#[test]
fn the_namespace_is_the_part_before_the_first_colon() {
    let ns = with_file(&[], "[namespaces.a]\npresence = \"off\"\n").unwrap();
    assert_eq!(Namespaces::namespace_of("a:b:c"), Some("a"));
    assert_eq!(Namespaces::namespace_of("lobby"), None);
    assert_eq!(ns.for_room("a:b:c").presence, PresenceMode::Off);
    assert_eq!(
        ns.for_room("a").presence,
        PresenceMode::Full,
        "no colon: default"
    );
    assert_eq!(
        ns.for_room("b:a").presence,
        PresenceMode::Full,
        "unlisted: default"
    );
}

#[test]
fn private_is_a_namespace_private_by_default() {
    let ns = from_flags(&config(&[]));
    assert!(ns.is_private("private:ops"));
    assert!(!ns.is_private("lobby") && !ns.is_private("privateish:x"));
    let ns = with_file(&[], "[namespaces.private]\nhistory_len = 5\n").unwrap();
    assert!(
        ns.is_private("private:ops"),
        "listed without `private`: still private"
    );
    assert_eq!(ns.for_room("private:ops").history_len, 5);
    let ns = with_file(&[], "[namespaces.team]\nprivate = true\n").unwrap();
    assert!(ns.is_private("team:core") && !ns.is_private("lobby"));
    // Another prefix still makes its rooms private.
    let ns = from_flags(&config(&["--private-room-prefix", "secret-"]));
    assert!(ns.is_private("secret-x") && !ns.is_private("private:x"));
}

#[test]
fn every_bad_value_names_its_key() {
    let cases = [
        ("[namespaces.a]\nbogus = 1\n", "namespaces.a.bogus"),
        (
            "[namespaces.a]\npresence = \"loud\"\n",
            "namespaces.a.presence",
        ),
        ("[namespaces.a]\npresence = 3\n", "namespaces.a.presence"),
        (
            "[namespaces.a]\npresence_max_members = 0\n",
            "namespaces.a.presence_max_members",
        ),
        (
            "[namespaces.a]\nhistory_len = 0\n",
            "namespaces.a.history_len",
        ),
        (
            "[namespaces.a]\nhistory_len = 2000000\n",
            "namespaces.a.history_len",
        ),
        (
            "[namespaces.a]\nhistory_len = \"x\"\n",
            "namespaces.a.history_len",
        ),
        (
            "[namespaces.a]\nhistory_ttl = 0\n",
            "namespaces.a.history_ttl",
        ),
        (
            "[namespaces.a]\nhistory_ttl = \"soon\"\n",
            "namespaces.a.history_ttl",
        ),
        (
            "[namespaces.a]\nclient_publish = \"yes\"\n",
            "namespaces.a.client_publish",
        ),
        ("[namespaces.a]\nprivate = 1\n", "namespaces.a.private"),
        (
            "[namespaces.a]\nmax_members = -5\n",
            "namespaces.a.max_members",
        ),
        (
            "[namespaces.a]\nhistory_ttl = \"500ms\"\n",
            "namespaces.a.history_ttl",
        ),
        (
            "[namespaces.a]\nhistory_ttl = 1.5\n",
            "namespaces.a.history_ttl",
        ),
        (
            "[namespaces.a]\nhistory_ttl = 99999999999\n",
            "namespaces.a.history_ttl",
        ),
        (
            "[namespaces.a]\nhistory_ttl = \"200years\"\n",
            "namespaces.a.history_ttl",
        ),
        (
            "[namespaces.a]\npresence_max_members = \"5\"\n",
            "namespaces.a.presence_max_members",
        ),
        (
            "[namespaces.a]\nmax_members = 0\n",
            "namespaces.a.max_members",
        ),
        (
            "[namespaces.private]\nprivate = false\n",
            "namespaces.private.private",
        ),
        ("[namespaces.a.b]\nx = 1\n", "namespaces.a.b"),
        ("namespaces = 3\n", "line 1"),
        ("namespaces.a = 3\n", "namespaces.a must be a table"),
        (
            "[namespaces.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n",
            "namespaces.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
        ("[namespaces.\"a b\"]\n", "namespaces.a b"),
        ("[namespaces.\"\"]\n", "namespaces."),
        ("other = 1\n", "other"),
        ("[namespaces.a\n", "line 1"),
    ];
    for (text, key) in cases {
        let err = with_file(&[], text).expect_err(text);
        assert!(err.contains(key), "{text:?}: {err}");
    }
}

#[test]
fn names_are_1_to_64_of_the_allowed_characters() {
    assert!(valid_name("a") && valid_name("live.v2-x_Y") && valid_name(&"a".repeat(64)));
    assert!(!valid_name("") && !valid_name(&"a".repeat(65)));
    assert!(!valid_name("a:b") && !valid_name("a b") && !valid_name("é"));
}

#[test]
fn with_another_prefix_the_private_namespace_may_be_public() {
    let ns = with_file(
        &["--private-room-prefix", "secret-"],
        "[namespaces.private]\nprivate = false\n",
    )
    .unwrap();
    assert!(!ns.is_private("private:x") && ns.is_private("secret-x"));
    // Without a `private` key, listing it keeps it private.
    let ns = with_file(
        &["--private-room-prefix", "secret-"],
        "[namespaces.private]\n",
    )
    .unwrap();
    assert!(ns.is_private("private:x"));
    // Without the implicit namespace, `private:` rooms follow the default.
    let ns = from_flags(&config(&["--private-room-prefix", "secret-"]));
    assert!(!ns.is_private("private:x"));
}

#[test]
fn from_config_reads_the_file_and_the_flags() {
    let path = std::env::temp_dir().join(format!(
        "wsgate-namespaces-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &path,
        "[namespaces.live]\npresence = \"count\"\nclient_publish = false\n",
    )
    .unwrap();
    let c = config(&[
        "--config",
        path.to_str().unwrap(),
        "--presence",
        "off",
        "--max-members",
        "7",
        "--client-publish",
        "false",
        "--history-ttl-s",
        "60",
    ]);
    let ns = Namespaces::load(
        c.default_namespace(),
        &c.private_room_prefix,
        c.config.as_deref(),
    )
    .unwrap();
    let loaded = c.load().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(*loaded.namespaces, ns);
    let live = ns.for_room("live:a");
    assert_eq!(live.presence, PresenceMode::Count);
    assert!(!live.client_publish);
    assert_eq!((live.max_members, live.history_ttl_s), (Some(7), 60));
    let lobby = ns.for_room("lobby");
    assert_eq!(lobby.presence, PresenceMode::Off);
    assert!(!lobby.client_publish && !lobby.private);
    assert_eq!(lobby.max_members, Some(7));
    let rules = RoomPolicy::rules(&ns, "lobby");
    assert_eq!(rules.presence, PresenceMode::Off);
    assert_eq!(rules.history_ttl, Duration::from_secs(60));
}

#[test]
fn bad_flags_name_the_flag() {
    let cases: [(&[&str], &str); 6] = [
        (&["--presence-max-members", "0"], "--presence-max-members"),
        (&["--max-members", "0"], "--max-members"),
        (&["--history-len", "1000001"], "--history-len"),
        (&["--history-ttl-s", "0"], "--history-ttl-s"),
        (&["--history-ttl-s", "99999999999"], "--history-ttl-s"),
        (&["--presence-grace-ms", "3600001"], "--presence-grace-ms"),
    ];
    for (args, flag) in cases {
        let err = config(args).load().expect_err(flag);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let c = config(&["--presence-grace-ms", "0", "--presence", "count"])
        .load()
        .unwrap();
    assert_eq!(c.presence_grace_ms, 0);
    assert_eq!(c.namespaces.for_room("x").presence, PresenceMode::Count);
}

#[test]
fn a_missing_file_names_its_path() {
    let c = config(&["--config", "/nonexistent/wsgate.toml"]);
    let err = c.load().unwrap_err();
    assert!(err.contains("/nonexistent/wsgate.toml"), "{err}");
}
