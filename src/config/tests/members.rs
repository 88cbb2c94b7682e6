//! Federation members: inline and referenced collectives, member federations, and collectives
//! shared between federations.

use super::*;

#[test]
fn a_federation_with_inline_and_referenced_members_loads() {
    let path = write(
        "valid.toml",
        &format!(
            "[instance]\nname = \"fb1\"\nstats_interval = 1\n\n{}",
            federation("")
        ),
    );
    let config = Config::load(&path).unwrap();
    let prod = config.federation("prod").unwrap();
    assert_eq!(prod.cluster_name("prod"), "prod");
    assert_eq!(
        prod.members,
        vec!["tokyo".to_string(), "london".to_string()]
    );
    assert_eq!(prod.max_hops, 8);
    let routes = config.routes("prod").unwrap();
    assert_eq!(routes.get("london"), Some(&Route::Direct));
    assert_eq!(routes.get("tokyo"), Some(&Route::Direct));
    assert_eq!(config.instance.name_or_default(), "fb1");
    assert_eq!(config.served_federations(), vec!["prod"]);
}

#[test]
fn the_default_instance_name_is_the_host_name_and_a_configured_one_wins() {
    let unnamed = crate::config::InstanceConfig::default();
    // Stable across restarts (no process id), so a chain or a status carries on under it.
    assert_eq!(unnamed.name_or_default(), crate::hostname());
    assert!(crate::config::validate_instance_name(&unnamed.name_or_default()).is_ok());
    let named = crate::config::InstanceConfig {
        name: Some("fb2".into()),
        ..Default::default()
    };
    assert_eq!(named.name_or_default(), "fb2");
}

#[test]
fn a_member_federation_routes_its_collectives_through_itself() {
    let text = format!(
        "[instance]\nserve = [\"global\"]\n\n{}members = [\"prod\"]\nmode = \"pass-through\"\n\n{}members = [\"london\", \"paris\"]\n",
        realm_block("prod", "federations.global"),
        realm_block("prod", "federations.prod"),
    );
    let config = Config::load(&write("chained.toml", &text)).unwrap();
    let routes = config.routes("global").unwrap();
    assert_eq!(routes.get("london"), Some(&Route::Via("prod".into())));
    assert_eq!(routes.get("paris"), Some(&Route::Via("prod".into())));
}

#[test]
fn a_collective_may_belong_to_two_federations() {
    let text = format!(
        "{}{}{}{}",
        realm_block("prod", "federations.prod"),
        realm_block("london", "federations.prod.collectives.london"),
        realm_block("prod", "federations.dr").replace(
            "[federations.dr]",
            "[federations.dr]\ncluster = \"disaster-recovery\""
        ),
        realm_block("london", "federations.dr.collectives.london"),
    );
    let config = Config::load(&write("shared.toml", &text)).unwrap();
    assert_eq!(
        config.federation("prod").unwrap().members,
        vec!["london".to_string()]
    );
    assert_eq!(
        config.federation("dr").unwrap().members,
        vec!["london".to_string()]
    );
    assert_eq!(
        config.federation("dr").unwrap().cluster_name("dr"),
        "disaster-recovery"
    );
    assert_eq!(config.served_federations(), vec!["dr", "prod"]);
}
