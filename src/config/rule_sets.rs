//! Stage 2 for `rule_sets`: names, rules and their order. Conditions are built in
//! `conditions.rs`, actions in `actions.rs`.

use std::collections::HashMap;

use super::actions::build_action;
use super::conditions::build_condition;
use super::diagnostics::{FileId, Report};
use super::file::FileRuleSet;
use super::model::{Rule, RuleSet};

pub fn build_rule_sets(
    report: &mut Report,
    raw: &[(FileId, usize, &FileRuleSet)],
    groups: &HashMap<String, usize>,
) -> (Vec<RuleSet>, HashMap<String, usize>) {
    let mut sets = Vec::with_capacity(raw.len());
    let mut by_name = HashMap::new();
    let mut first_seen: HashMap<&str, String> = HashMap::new();
    for &(file, index, set) in raw {
        let at = format!("rule_sets[{index}]");
        if let Some(first) = first_seen.get(set.name.as_str()) {
            report.error(
                file,
                &format!("{at}.name"),
                format!(
                    "duplicate rule set name \"{}\" (first defined at {first})",
                    set.name
                ),
            );
            continue;
        }
        first_seen.insert(&set.name, report.place(file, &format!("{at}.name")));
        let mut rule_names: HashMap<&str, ()> = HashMap::new();
        let mut rules = Vec::with_capacity(set.rules.len());
        for (r, rule) in set.rules.iter().enumerate() {
            let at = format!("{at}.rules[{r}]");
            if rule_names.insert(&rule.name, ()).is_some() {
                report.error(
                    file,
                    &format!("{at}.name"),
                    format!(
                        "duplicate rule name \"{}\" in rule set \"{}\"",
                        rule.name, set.name
                    ),
                );
            }
            if rule.actions.is_empty() {
                report.error(
                    file,
                    &format!("{at}.actions"),
                    "a rule needs at least one action",
                );
            }
            let conditions = rule
                .conditions
                .iter()
                .enumerate()
                .filter_map(|(c, cond)| {
                    build_condition(report, file, &format!("{at}.conditions[{c}]"), cond)
                })
                .collect();
            let actions = rule
                .actions
                .iter()
                .enumerate()
                .filter_map(|(a, action)| {
                    build_action(report, file, &format!("{at}.actions[{a}]"), action, groups)
                })
                .collect();
            rules.push(Rule {
                name: rule.name.clone(),
                conditions,
                actions,
                stop_evaluating: rule.stop_evaluating,
            });
        }
        by_name.insert(set.name.clone(), sets.len());
        sets.push(RuleSet {
            name: set.name.clone(),
            rules,
        });
    }
    (sets, by_name)
}
