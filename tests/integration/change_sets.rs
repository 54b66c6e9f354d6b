//! Change sets against the real API server, where the attack is on the set itself rather
//! than on a sync (tests/integration/gitops.rs has the sync's whole story).

use anyhow::Result;
use countersign::api::{ChangeSet, ChangeSetSpec, SetMember, UserInfo};
use countersign::cluster::Cluster;
use countersign::core::approval::set::set_digest;
use countersign::core::plan::{ReviewPlan, Step, Write};
use kube::Api;
use kube::api::PostParams;

use crate::support::TestNamespace;
use crate::support::countersign::{INSTALL_NAMESPACE, own_client};
use crate::support::flow::two_level_chain;

fn spec(requester: &str, members: &[(&str, &str)]) -> ChangeSetSpec {
    let members: Vec<SetMember> = members
        .iter()
        .map(|(request, target)| SetMember {
            request: (*request).into(),
            target: countersign::api::ApprovalTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: (*target).into(),
                uid: None,
            },
            digest: format!("sha256:{target}"),
        })
        .collect();
    let chain = serde_json::from_value(two_level_chain()["approval"].clone()).unwrap_or_default();
    ChangeSetSpec {
        change: countersign::api::ChangeRecord {
            digest: set_digest(&members),
            summary: Default::default(),
            summary_seal: None,
            requester: UserInfo::new(requester, &[]),
            operation: countersign::api::Operation::Update,
            requested_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            ),
            origin: None,
        },
        members,
        policy: countersign::api::PolicySnapshot {
            name: "p".into(),
            chain,
            ..Default::default()
        },
        reviews: Vec::new(),
    }
}

fn open(namespace: &str, name: &str, spec: ChangeSetSpec) -> ReviewPlan {
    ReviewPlan {
        steps: vec![Step::new(
            Write::OpenSet {
                namespace: namespace.into(),
                name: name.into(),
                spec: Box::new(spec),
            },
            "could not open the set ({error})",
        )],
        answer: countersign::core::plan::Answer::allow(),
        events: Vec::new(),
    }
}

/// A set made ahead under the name a sync's set would take (names are deterministic, so
/// retries and replicas converge) does not make the sync's requests join it: opening the
/// sync's set fails instead. The same set again converges.
#[tokio::test]
async fn a_set_squatting_on_a_syncs_name_is_not_taken_for_the_syncs() -> Result<()> {
    let ns = TestNamespace::create("squat", None).await?;
    let ns = ns.name();
    let own = own_client().await?;
    let sets: Api<ChangeSet> = Api::namespaced(own.clone(), ns);
    let flux = "system:serviceaccount:flux-system:kustomize-controller";
    // countersign's own identity may create any set (its webhook lets its own creates
    // through), so the squatter's set is planted with it.
    let mut squatter = ChangeSet::new("apps-0123456789", spec("mallory", &[("web-1", "web")]));
    squatter.metadata.namespace = Some(ns.into());
    sets.create(&PostParams::default(), &squatter).await?;

    let cluster = Cluster::new(own, INSTALL_NAMESPACE.into(), "test");
    let theirs = spec(flux, &[("web-1", "web"), ("api-1", "api")]);
    let answer = cluster
        .carry_out(open(ns, "apps-0123456789", theirs.clone()))
        .await;
    assert!(!answer.allowed, "the sync's set was taken as opened");
    assert!(
        answer.message.contains("exists that is not this sync's"),
        "{}",
        answer.message
    );

    // The sync's own set, opened twice (a retry, or a second replica): one object.
    let first = cluster
        .carry_out(open(ns, "apps-abcdef0123", theirs.clone()))
        .await;
    let again = cluster.carry_out(open(ns, "apps-abcdef0123", theirs)).await;
    assert!(
        first.allowed && again.allowed,
        "{} / {}",
        first.message,
        again.message
    );
    Ok(())
}
