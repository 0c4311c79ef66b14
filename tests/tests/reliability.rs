//! scratch
use tests::{proxy, Faults, TestEnv};

#[tokio::test]
async fn scratch_drop() {
    let env = TestEnv::new("rel-scratch");
    let p = proxy(Faults { drop_create_response_percent: 30, ..Faults::default() });
    let tap = env.with_endpoint(&p.endpoint());
    let run = tap.tap(&["--output", "json", "deploy", "--no-wait"]);
    eprintln!("code {:?}\nSTDERR\n{}", run.code, run.stderr);
    let dropped: Vec<_> =
        p.calls().into_iter().filter(|c| c.fate == tests::Fate::ResponseDropped).map(|c| c.operation).collect();
    eprintln!("dropped: {dropped:?}");
    let inv = env.inventory().await;
    eprintln!("{:#?}", inv.differences(&tests::Inventory::spec()));
    panic!("scratch");
}
