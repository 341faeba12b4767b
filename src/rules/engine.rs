//! The rule engine: a compiled configuration and [`Engine::decide`], the one function that
//! turns a request into a routing, caching and upgrade decision. The proxy and
//! `portico explain` both call it, so what `explain` prints is what the proxy does.

use smallvec::SmallVec;

use crate::config::model::{
    Action, CacheBehavior, Config, OnCachedUpgrade, QueryStringMode, Redirect, Route,
};

use super::request::RequestFacts;
use super::route_table::{Miss, RouteTable};

/// A configuration ready to serve: the validated config plus its route index.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
    table: RouteTable,
}

/// A rule that fired: indexes into `config.rule_sets[set].rules[rule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiredRule {
    pub set: u32,
    pub rule: u32,
}

/// Why this request may or may not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Look up and store.
    Enabled,
    /// Caching is off for the route or by a rule (`CONFIG_NOCACHE`).
    Disabled,
    /// A WebSocket route never caches, whatever rules say.
    WebSocketRoute,
    /// An upgrade on a caching route: never looked up, never stored.
    Upgrade,
}

/// What happens to a WebSocket upgrade request (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeHandling {
    /// Not an upgrade request.
    None,
    /// Forward `Upgrade`/`Connection`, relay the 101, tunnel untouched.
    Tunnel,
    /// Front Door's failure: strip the upgrade headers, send a plain GET.
    Reproduce,
    /// Answer 426 at once.
    Reject,
}

impl UpgradeHandling {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeHandling::None => "none",
            UpgradeHandling::Tunnel => "tunnel",
            UpgradeHandling::Reproduce => "reproduce",
            UpgradeHandling::Reject => "reject",
        }
    }
}

/// Everything the edge decided about one request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub route: usize,
    pub fired: SmallVec<[FiredRule; 8]>,
    pub origin_group: usize,
    pub cache: CacheUse,
    /// The rule that last set the query-string mode, if any (else the route's).
    query_string_rule: Option<(FiredRule, usize)>,
    pub cache_behavior: CacheBehavior,
    pub cache_duration: Option<std::time::Duration>,
    pub upgrade: UpgradeHandling,
    /// The rewritten path (no query) when a `url_rewrite` fired.
    pub rewritten_path: Option<String>,
    /// A `url_redirect` that fired, or the route's HTTPS redirect.
    pub redirect: Option<RedirectTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectTarget {
    /// A rule's `url_redirect` (indexes of the action).
    Rule(FiredRule, usize),
    /// The route's `https_redirect`.
    Https,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        let table = RouteTable::new(&config.routes);
        Engine { config, table }
    }

    pub fn route(&self, index: usize) -> &Route {
        &self.config.routes[index]
    }

    pub fn serves_host(&self, host: &str) -> bool {
        self.table.serves_host(host)
    }

    pub fn rule(&self, fired: FiredRule) -> &crate::config::model::Rule {
        &self.config.rule_sets[fired.set as usize].rules[fired.rule as usize]
    }

    /// Actions of every fired rule, in firing order.
    pub fn fired_actions<'e>(
        &'e self,
        decision: &'e Decision,
    ) -> impl Iterator<Item = &'e Action> + 'e {
        decision
            .fired
            .iter()
            .flat_map(|f| self.rule(*f).actions.iter())
    }

    pub fn redirect(&self, target: &RedirectTarget) -> Option<&Redirect> {
        match target {
            RedirectTarget::Rule(fired, action) => match &self.rule(*fired).actions[*action] {
                Action::UrlRedirect(redirect) => Some(redirect),
                _ => None,
            },
            RedirectTarget::Https => None,
        }
    }

    /// The query-string mode in force for the cache key.
    pub fn query_string<'e>(&'e self, decision: &Decision) -> &'e QueryStringMode {
        if let Some((fired, action)) = decision.query_string_rule {
            if let Action::CacheKeyQueryString(mode) = &self.rule(fired).actions[action] {
                return mode;
            }
        }
        &self.route(decision.route).cache.query_string
    }

    /// Routes the request and runs its rule sets.
    pub fn decide(&self, request: &RequestFacts<'_>) -> Result<Decision, Miss> {
        let found = self.table.match_request(
            &self.config.routes,
            request.host,
            request.path,
            request.method,
            request.scheme,
            request.listener,
        )?;
        let route = &self.config.routes[found.route];
        let mut decision = Decision {
            route: found.route,
            fired: SmallVec::new(),
            origin_group: route.origin_group,
            cache: if route.cache.enabled {
                CacheUse::Enabled
            } else {
                CacheUse::Disabled
            },
            query_string_rule: None,
            cache_behavior: route.cache.behavior,
            cache_duration: route.cache.duration,
            upgrade: UpgradeHandling::None,
            rewritten_path: None,
            redirect: found.https_redirect.then_some(RedirectTarget::Https),
        };
        'sets: for &set in &route.rule_sets {
            for (index, rule) in self.config.rule_sets[set].rules.iter().enumerate() {
                if !rule.conditions.iter().all(|c| c.holds(request)) {
                    continue;
                }
                let fired = FiredRule {
                    set: set as u32,
                    rule: index as u32,
                };
                decision.fired.push(fired);
                self.apply(&mut decision, fired, request.path);
                if rule.stop_evaluating {
                    break 'sets;
                }
            }
        }
        if route.websocket {
            decision.cache = CacheUse::WebSocketRoute;
        }
        if request.is_websocket_upgrade() {
            decision.upgrade = match (decision.cache, route.on_cached_upgrade) {
                (CacheUse::Enabled, OnCachedUpgrade::Reproduce) => UpgradeHandling::Reproduce,
                (CacheUse::Enabled, OnCachedUpgrade::Reject) => UpgradeHandling::Reject,
                _ => UpgradeHandling::Tunnel,
            };
            if decision.cache == CacheUse::Enabled {
                decision.cache = CacheUse::Upgrade;
            }
        }
        Ok(decision)
    }

    fn apply(&self, decision: &mut Decision, fired: FiredRule, original_path: &str) {
        for (index, action) in self.rule(fired).actions.iter().enumerate() {
            match action {
                Action::RouteOverride {
                    caching,
                    origin_group,
                } => {
                    if let Some(on) = caching {
                        decision.cache = if *on {
                            CacheUse::Enabled
                        } else {
                            CacheUse::Disabled
                        };
                    }
                    if let Some(group) = origin_group {
                        decision.origin_group = *group;
                    }
                }
                Action::CacheExpiration { behavior, duration } => {
                    decision.cache_behavior = *behavior;
                    decision.cache_duration = *duration;
                }
                Action::CacheKeyQueryString(_) => decision.query_string_rule = Some((fired, index)),
                Action::UrlRewrite {
                    source_pattern,
                    destination,
                    preserve_unmatched_path,
                } => {
                    let current = decision.rewritten_path.as_deref().unwrap_or(original_path);
                    if let Some(rest) = current.strip_prefix(source_pattern.as_str()) {
                        let mut path = String::with_capacity(destination.len() + rest.len());
                        path.push_str(destination);
                        if *preserve_unmatched_path {
                            if path.ends_with('/') && rest.starts_with('/') {
                                path.pop();
                            }
                            path.push_str(rest);
                        }
                        decision.rewritten_path = Some(path);
                    }
                }
                Action::UrlRedirect(_) => {
                    if decision.redirect.is_none() {
                        decision.redirect = Some(RedirectTarget::Rule(fired, index));
                    }
                }
                Action::ModifyRequestHeader(_) | Action::ModifyResponseHeader(_) => {}
            }
        }
    }
}
