//! Receivers, the route tree and inhibitions, checked.

use std::collections::BTreeMap;

use vigil_domain::time::DurationSpec;

use super::checks::{check_attempts, check_headers, check_matchers, check_url, names, secret};
use super::spec::{InhibitSpec, ReceiverSpec, RouteSpec};
use super::{Inhibition, Receiver, Route};

pub(super) fn check_receiver(
    spec: ReceiverSpec,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Receiver, String> {
    check_url(&spec.url)?;
    Ok(Receiver {
        name: spec.name,
        kind: spec.kind,
        url: spec.url,
        secret: secret(spec.secret, spec.secret_env, env)?,
        timeout: spec.timeout.0,
        max_attempts: check_attempts(spec.max_attempts)?,
        headers: check_headers(spec.headers)?,
    })
}

pub(super) fn check_route(spec: RouteSpec, parent: Option<&Route>) -> Result<Route, String> {
    let receiver = match (spec.receiver, parent) {
        (Some(receiver), _) => receiver,
        (None, Some(parent)) => parent.receiver.clone(),
        (None, None) => return Err("route: the root route needs a receiver".into()),
    };
    let seconds = |value: Option<DurationSpec>, inherited: Option<u64>, default: u64| {
        value.map_or(inherited.unwrap_or(default), |d| d.0.as_secs())
    };
    let mut route = Route {
        receiver,
        matchers: check_matchers("route.matchers", &spec.matchers)?,
        group_by: spec
            .group_by
            .or_else(|| parent.map(|p| p.group_by.clone()))
            .unwrap_or_else(|| vec!["alertname".into()]),
        group_wait_s: seconds(spec.group_wait, parent.map(|p| p.group_wait_s), 30),
        group_interval_s: seconds(spec.group_interval, parent.map(|p| p.group_interval_s), 300),
        repeat_interval_s: seconds(
            spec.repeat_interval,
            parent.map(|p| p.repeat_interval_s),
            4 * 3_600,
        ),
        continue_matching: spec.r#continue,
        routes: Vec::new(),
    };
    if route.group_interval_s == 0 || route.repeat_interval_s == 0 {
        return Err("route: group_interval and repeat_interval must be positive".into());
    }
    let children = spec
        .routes
        .into_iter()
        .map(|child| check_route(child, Some(&route)))
        .collect::<Result<_, _>>()?;
    route.routes = children;
    Ok(route)
}

pub(super) fn check_receivers_exist(
    route: &Route,
    receivers: &BTreeMap<String, Receiver>,
) -> Result<(), String> {
    if !receivers.contains_key(&route.receiver) {
        return Err(format!(
            "route: no receiver is named {:?} (defined: {})",
            route.receiver,
            names(receivers.keys())
        ));
    }
    route
        .routes
        .iter()
        .try_for_each(|child| check_receivers_exist(child, receivers))
}

pub(super) fn check_inhibition(spec: InhibitSpec) -> Result<Inhibition, String> {
    let source = check_matchers("inhibit_rules.source_matchers", &spec.source_matchers)?;
    let target = check_matchers("inhibit_rules.target_matchers", &spec.target_matchers)?;
    if source.is_empty() || target.is_empty() {
        return Err("inhibit_rules: source_matchers and target_matchers must not be empty".into());
    }
    Ok(Inhibition {
        source,
        target,
        equal: spec.equal,
    })
}
