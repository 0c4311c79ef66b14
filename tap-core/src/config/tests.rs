use super::*;
use figment::Jail;

fn no_overrides() -> Figment {
    Figment::new()
}

#[test]
fn defaults_are_the_spec_and_valid() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.network.vpc_cidr, "10.0.0.0/16");
    assert_eq!(c.services.len(), 3);
    assert_eq!((c.services[2].cpu, c.services[2].memory), (2048, 4096));
    assert_eq!(c.logs.retention_days, 30);
}

#[test]
fn layering_defaults_file_env_flags() {
    Jail::expect_with(|jail| {
        jail.create_file("tap.toml", "environment = \"from-file\"\nimage_tag = \"v1\"\n[logs]\nretention_days = 60\n")?;
        let c = Config::load(None, no_overrides()).unwrap();
        assert_eq!((c.environment.as_str(), c.image_tag.as_str(), c.logs.retention_days), ("from-file", "v1", 60));

        jail.set_env("TAP_ENVIRONMENT", "from-env");
        jail.set_env("TAP_SCALING__MAX_CAPACITY", "12");
        let c = Config::load(None, no_overrides()).unwrap();
        assert_eq!((c.environment.as_str(), c.scaling.max_capacity, c.image_tag.as_str()), ("from-env", 12, "v1"));

        let flags = Figment::from(Serialized::default("environment", "from-flag"));
        let c = Config::load(None, flags).unwrap();
        assert_eq!(c.environment, "from-flag");
        assert_eq!(c.network.az_count, 3, "untouched keys keep their defaults");
        Ok(())
    });
}

#[test]
fn explicit_config_file_must_exist_and_unknown_keys_are_rejected() {
    Jail::expect_with(|jail| {
        assert!(Config::load(Some(Path::new("missing.toml")), no_overrides()).is_err());
        jail.create_file("typo.toml", "[network]\nvpc_cdir = \"10.0.0.0/16\"\n")?;
        let err = Config::load(Some(Path::new("typo.toml")), no_overrides()).unwrap_err().to_string();
        assert!(err.contains("vpc_cdir"), "{err}");
        Ok(())
    });
}

/// The field of each problem of `err` (each must be a single problem).
fn fields(err: &ConfigError) -> Vec<String> {
    let field = |p: &ConfigError| match p {
        ConfigError::Invalid { field, .. } => field.clone(),
        other => panic!("not a single problem: {other:?}"),
    };
    err.problems().into_iter().map(field).collect()
}

/// Every problem `validate` finds in `c`, as text.
fn problems(c: &Config) -> Vec<String> {
    c.validate().err().map(|e| e.problems().iter().map(|p| p.to_string()).collect()).unwrap_or_default()
}

fn route(short_name: &str, path_pattern: &str, priority: i32) -> RouteSpec {
    let path_pattern = Some(path_pattern.into());
    RouteSpec { short_name: short_name.into(), path_pattern, priority, health_check_path: "/".into() }
}

fn rejects(mutate: impl FnOnce(&mut Config), field: &str) {
    let mut c = Config::default();
    mutate(&mut c);
    let fields = fields(&c.validate().expect_err(field));
    assert!(fields.iter().any(|f| f.starts_with(field)), "expected field {field}, got {fields:?}");
}

#[test]
fn validation_reports_every_problem_not_only_the_first() {
    let mut c = Config { environment: "Bad".into(), ..Config::default() };
    c.network.vpc_cidr = "10.0.0.0/33".into();
    c.services[1].cpu = 300;
    c.logs.retention_days = 31;
    c.scaling.cpu_target = 0.0;
    let err = c.validate().unwrap_err();
    assert!(matches!(err, ConfigError::Problems(_)), "several problems: {err:?}");
    assert_eq!(
        fields(&err),
        ["environment", "network.vpc_cidr", "services[1].cpu", "scaling.cpu_target", "logs.retention_days"]
    );
    let text = err.to_string();
    assert!(text.starts_with("invalid configuration (5 problems):\n  - `environment` = \"Bad\""), "{text}");
    assert_eq!(text.lines().count(), 6, "{text}");
}

#[test]
fn service_names_that_take_taps_own_names_are_refused() {
    let mut c = Config::default();
    c.services[0].name = "alb".into();
    let err = c.validate().unwrap_err();
    match &err {
        ConfigError::Invalid { field, value, rule } => {
            assert_eq!((field.as_str(), value.as_str()), ("services[0].name", "alb"));
            assert!(rule.contains("security group") && rule.contains("tap-alb-sg-dev"), "{rule}");
            assert!(rule.contains("load balancer"), "{rule}");
        }
        other => panic!("{other:?}"),
    }
    // Every other name of the default platform is free of collisions, whatever the suffix.
    for env in ["dev", "alb", "sg-dev", "task-execution"] {
        Config { environment: env.into(), ..Config::default() }.validate().unwrap();
    }
    // A service's names may look like tap's as long as no AWS namespace holds both.
    let mut c = Config::default();
    c.services[2].name = "vpc".into();
    c.services[2].allow_from = vec!["api-gateway".into()];
    c.validate().unwrap();
}

#[test]
fn services_whose_output_keys_collide_are_refused_naming_both() {
    let mut c = Config::default();
    c.services[0].name = "processing".into();
    let err = c.validate().unwrap_err();
    match &err {
        ConfigError::Invalid { field, value, rule } => {
            assert_eq!((field.as_str(), value.as_str()), ("services[2].name", "processing-service"));
            assert!(rule.contains("`tap outputs` keys as service `processing`"), "{rule}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_load_error_shows_its_text_once() {
    Jail::expect_with(|jail| {
        jail.create_file("tap.toml", "[network]\naz_count = \"three\"\n")?;
        let err = Config::load(None, no_overrides()).unwrap_err();
        // As `{:#}` of anyhow shows it: the error, then each source.
        let mut chained = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            chained.push_str(&format!(": {e}"));
            source = e.source();
        }
        assert_eq!(chained.matches("az_count").count(), 1, "{chained}");
        Ok(())
    });
}

#[test]
fn validation_names_the_field() {
    rejects(|c| c.environment = "Bad_Suffix!".into(), "environment");
    rejects(|c| c.environment = String::new(), "environment");
    rejects(|c| c.environment = "-dev".into(), "environment");
    rejects(|c| c.environment = "a".repeat(30), "environment");
    rejects(|c| c.services[0].memory = 8192, "services[0].memory");
    rejects(|c| c.services[1].cpu = 300, "services[1].cpu");
    rejects(|c| c.network.vpc_cidr = "10.0.0.0/33".into(), "network.vpc_cidr");
    rejects(|c| c.network.private_subnet_cidrs[0] = "10.0.1.0/24".into(), "network.private_subnet_cidrs[0]");
    rejects(|c| c.network.public_subnet_cidrs[2] = "192.168.0.0/24".into(), "network.public_subnet_cidrs[2]");
    rejects(|c| c.scaling.min_capacity = 11, "scaling.min_capacity");
    rejects(|c| c.services[2].name = "frontend".into(), "services[2].name");
    rejects(|c| c.services[2].port = 3000, "services[2].port");
    rejects(|c| c.logs.retention_days = 31, "logs.retention_days");
    rejects(|c| c.ingress.deregistration_delay_seconds = 3601, "ingress.deregistration_delay_seconds");
    rejects(|c| c.ingress.deregistration_delay_seconds = -1, "ingress.deregistration_delay_seconds");
    rejects(
        |c| c.services[1].secrets.insert("X".into(), "nope".into()).map(|_| ()).unwrap_or(()),
        "services[1].secrets",
    );
}

#[test]
fn deregistration_delay_accepts_what_aws_allows() {
    assert_eq!(Config::default().ingress.deregistration_delay_seconds, 30);
    for ok in [0, 30, 300, 3600] {
        let mut c = Config::default();
        c.ingress.deregistration_delay_seconds = ok;
        c.validate().unwrap();
    }
    let mut c = Config::default();
    c.ingress.deregistration_delay_seconds = 4000;
    let text = c.validate().unwrap_err().to_string();
    assert!(
        text.contains("ingress.deregistration_delay_seconds") && text.contains("4000") && text.contains("0 and 3600"),
        "{text}"
    );
}

#[test]
fn alarms_defaults_layering_overrides_and_the_ranges_cloudwatch_accepts() {
    let c = Config::default();
    assert!(c.alarms.enabled);
    assert_eq!((c.alarms.cpu_high_percent, c.alarms.memory_high_percent), (90, 90));
    assert_eq!((c.alarms.unhealthy_targets, c.alarms.target_5xx_count), (1, 10));
    assert_eq!((c.alarms.period_seconds, c.alarms.evaluation_periods), (60, 3));
    Jail::expect_with(|jail| {
        jail.create_file(
            "tap.toml",
            "[alarms]\ncpu_high_percent = 80\nperiod_seconds = 300\n\n[[services]]\nname = \"solo\"\ncpu = 256\n\
             memory = 512\nport = 7000\nalarms = { memory_high_percent = 75 }\n",
        )?;
        jail.set_env("TAP_ALARMS__EVALUATION_PERIODS", "5");
        let c = Config::load(None, no_overrides()).unwrap();
        assert_eq!((c.alarms.cpu_high_percent, c.alarms.period_seconds, c.alarms.evaluation_periods), (80, 300, 5));
        let t = c.alarm_thresholds(&c.services[0]);
        assert_eq!((t.cpu_high_percent, t.memory_high_percent, t.target_5xx_count), (80, 75, 10));
        Ok(())
    });
    rejects(|c| c.alarms.cpu_high_percent = 0, "alarms.cpu_high_percent");
    rejects(|c| c.alarms.memory_high_percent = 101, "alarms.memory_high_percent");
    rejects(|c| c.alarms.unhealthy_targets = 0, "alarms.unhealthy_targets");
    rejects(|c| c.alarms.target_5xx_count = 0, "alarms.target_5xx_count");
    rejects(|c| c.alarms.evaluation_periods = 0, "alarms.evaluation_periods");
    rejects(|c| c.services[1].alarms.cpu_high_percent = Some(150), "services[1].alarms.cpu_high_percent");
    for bad in [0, 10, 30, 90] {
        rejects(|c| c.alarms.period_seconds = bad, "alarms.period_seconds");
    }
    // 60 s × 1441 is over a day; an hour's period may span seven days.
    rejects(|c| c.alarms.evaluation_periods = 1441, "alarms.evaluation_periods");
    let mut c = Config::default();
    (c.alarms.period_seconds, c.alarms.evaluation_periods) = (3600, 168);
    c.validate().unwrap();
    let mut c = Config::default();
    c.alarms.period_seconds = 45;
    let text = c.validate().unwrap_err().to_string();
    assert!(text.contains("alarms.period_seconds") && text.contains("45") && text.contains("multiple of 60"), "{text}");
}

#[test]
fn long_suffix_error_names_the_limited_name() {
    let c = Config { environment: "abcdefghijklmnopqrstuvwxyz".into(), ..Config::default() };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("environment") && err.contains("32"), "{err}");
}

#[test]
fn strategies_are_checked_before_any_call() {
    use crate::strategy::{Strategy, StrategyOverrides};
    // Every routed service may shift traffic; the defaults leave room for the test rules.
    let all = Config {
        deploy: DeploySettings { strategy: Strategy::Canary, ..DeploySettings::default() },
        ..Config::default()
    };
    assert_eq!(problems(&all), Vec::<String>::new());
    assert_eq!(all.strategy_of(&all.services[2]).strategy, Strategy::Rolling, "no route: rolling");
    let mut own = all.clone();
    own.services[2].deploy.strategy = Some(Strategy::BlueGreen);
    assert_eq!(problems(&own).len(), 1, "{:?}", problems(&own));
    assert!(problems(&own)[0].contains("services[2].deploy.strategy") && problems(&own)[0].contains("`route`"));

    let mut c = Config::default();
    c.services[1].deploy =
        StrategyOverrides { strategy: Some(Strategy::Linear), linear_step_percent: Some(2.0), ..Default::default() };
    c.deploy.canary_percent = 0.0;
    let found = problems(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("services[1].deploy.linear_step_percent") && found[0].contains("3.0 to 100.0"),
        "{found:?}"
    );

    // The api-gateway's test rule needs priority 9: a rule of another service there is a clash.
    let mut c = Config::default();
    c.services[1].deploy.strategy = Some(Strategy::BlueGreen);
    let mut extra = c.services[1].clone();
    extra.name = "admin".into();
    extra.port = 8081;
    extra.deploy = StrategyOverrides::default();
    extra.route = Some(route("adm", "/admin/*", 9));
    c.services.push(extra);
    let found = problems(&c);
    assert!(found.iter().any(|p| p.contains("services[1].route.priority") && p.contains("priority 9")), "{found:?}");
}

/// 120 routed services need 120 rules on the one listener: refused naming `services`, the
/// count and the 100-rule limit, before any AWS call. 100 rules exactly are accepted.
#[test]
fn more_routed_services_than_a_listener_takes_rules_are_refused() {
    let with_routed = |n: usize| {
        let mut c = Config::default();
        c.services.truncate(1);
        let template = Config::default().services[1].clone();
        for i in 0..n {
            let mut s = template.clone();
            s.name = format!("svc-{i}");
            s.port = 20000 + i as u16;
            s.route = Some(route(&format!("s{i}"), &format!("/s{i}/*"), 100 + i as i32));
            c.services.push(s);
        }
        c
    };
    assert!(with_routed(99).validate().is_ok(), "99 path rules and 100 target groups (with the frontend's)");
    let found = problems(&with_routed(100));
    assert_eq!(found.len(), 1, "exactly 100 rules are fine, 101 target groups are not: {found:?}");
    assert!(found[0].contains("101 target groups") && found[0].contains("at most 100 target groups"));
    let found = problems(&with_routed(120));
    let rules: Vec<&String> = found.iter().filter(|p| p.contains("rules")).collect();
    assert_eq!(rules.len(), 1, "{found:?}");
    for needle in ["`services`", "120 listener rules", "at most 100 rules"] {
        assert!(rules[0].contains(needle), "{needle} in {rules:?}");
    }
    // Blue/green doubles them and adds the default service's `/*` pair: 51 routed shifting
    // services need 102 rules and 102 target groups.
    let mut c = with_routed(50);
    c.deploy.strategy = Strategy::BlueGreen;
    let found = problems(&c);
    assert!(found.iter().any(|p| p.contains("102 listener rules")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("102 target groups")), "{found:?}");
}

/// `tap.example.toml` shows every setting with its default: read alone, it is the default config,
/// value for value (the end-to-end suite checks that it shows every key).
#[test]
fn the_example_file_is_the_default_config_value_for_value() {
    let example: Config = Figment::from(Toml::string(include_str!("../../../tap.example.toml"))).extract().unwrap();
    assert_eq!(example, Config::default());
}

/// The built-in services are the SPEC's (`platform`'s TOML, read into [`Config::default`]).
#[test]
fn the_built_in_services_are_the_specs() {
    let services = platform::services();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["frontend", "api-gateway", "processing-service"]);
    let api = &services[1];
    assert_eq!((api.cpu, api.memory, api.port, api.desired_count), (1024, 2048, 8080, 2));
    assert_eq!(api.route.as_ref().map(|r| (r.path_pattern.as_deref(), r.priority)), Some((Some("/api/*"), 10)));
    assert_eq!(api.secrets.len(), 2);
    assert!(services[2].discovery && services[2].allow_from == ["api-gateway"]);
    assert_eq!(services[0].route.as_ref().map(|r| r.priority), Some(10));
}
