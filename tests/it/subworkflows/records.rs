//! A child execution's row is written whole: whoever reads the store while a parent runs (the
//! page, `show`, the API) never sees a child without the node (and item) that started it.

use super::{doubler, fan_parent, put};
use crate::support::*;

#[test]
fn a_childs_row_names_its_parent_node_from_the_moment_it_exists() {
    let env = Env::new();
    put(&env, "kids/doubler.json", &doubler());
    let parent = put(&env, "fan.json", &fan_parent("./kids/doubler.json", true));
    assert_success(&env.cmd(["history"]), "history (creates the store)");
    // The store refuses, from here on, any child row written without its link: a reader
    // between two writes would have seen one.
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER whole_child BEFORE INSERT ON executions
             WHEN NEW.relation = 'sub' AND NEW.parent_node IS NULL
             BEGIN SELECT RAISE(ABORT, 'a child row without its parent node'); END;",
        )
        .unwrap();
    let out = env.run(
        &parent,
        r#"{"ns": [1, 2], "fail_on": null, "ok_file": ""}"#,
        &[],
    );
    assert_success(&out, "the parent");
    assert_eq!(stdout(&out).trim(), "6");
}
