//! ETSI MEC 012 radio network information through the router: RAB, PLMN and layer-2
//! queries over consented UEs, and cell-change subscriptions fed by UE moves.

mod support;

use mecfed_api::{mec::rni::cell_identity, notify::Notification};
use mecfed_core::{AccessKind, GeoPoint, OperatorId, Plmn, Resources, Site, SiteId, ZoneId};
use mecfed_store::typed::Typed;
use serde_json::{Value, json};
use support::{Api, INST, world};

const RNI: &str = "/rni/v2";

async fn put_site(api: &Api, id: &str, plmn: Option<&str>, aps: &[&str]) {
    let mut s = Site::new(
        SiteId::new(id).unwrap(),
        OperatorId::new("op-a").unwrap(),
        "cork",
        ZoneId::new("cork-z1").unwrap(),
        GeoPoint::new(51.9, -8.47).unwrap(),
        Resources::parse("cpu=8,memory=16Gi,sessions=500").unwrap(),
    )
    .unwrap();
    s.access_points = aps.iter().map(|a| a.to_string()).collect();
    s.access_kinds = vec![AccessKind::Lte];
    s.plmn = plmn.map(|p| Plmn::parse(p).unwrap());
    Typed::new(api.store.clone()).put(&s).await.unwrap();
}

async fn put_ue(api: &Api, id: &str, ip: &str, cell: &str, shared: &[&str]) {
    let ue = json!({"id": id, "identity": {"ipv4Address": ip}, "sharedWith": shared,
        "attachment": {"access": "lte", "accessPoint": cell, "operator": "op-a",
            "location": {"latitude": 51.9, "longitude": -8.47}}});
    let (s, v) = api
        .request("PUT", &format!("/mecfed/v1/ues/{id}"), Some(ue))
        .await;
    assert!(s == 200 || s == 201, "{v}");
    api.settle().await;
}

/// Alpha's arena on cork-a (PLMN 272-01, cells cell-1 and cell-2); u1 (alpha's consent) and
/// u2 (none) on cell-1; a site without a PLMN elsewhere.
async fn radio() -> (Api, String, String, String) {
    let (api, alpha, beta, me) = world().await;
    put_site(&api, "cork-a", Some("272-01"), &["cell-1", "cell-2"]).await;
    put_site(&api, "cork-b", None, &["cell-9"]).await;
    put_ue(&api, "u1", "10.0.0.1", "cell-1", &["alpha"]).await;
    put_ue(&api, "u2", "10.0.0.2", "cell-1", &[]).await;
    (api, alpha, beta, me)
}

async fn outbox(api: &Api) -> Vec<Value> {
    Typed::new(api.store.clone())
        .list::<Notification>()
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|v| v.value.body)
        .collect()
}

fn ips(rab: &Value) -> Vec<String> {
    rab["RabInfo"]["cellUserInfo"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ueInfo"].as_array().unwrap().clone())
        .map(|u| u["associateId"][0]["value"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn queries_report_consented_ues_on_cells_with_a_plmn() {
    let (api, alpha, beta, me) = radio().await;
    let (s, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ips(&v), ["10.0.0.1"]);
    let cell = &v["RabInfo"]["cellUserInfo"][0];
    assert_eq!(cell["ecgi"]["plmn"], json!({"mcc": "272", "mnc": "01"}));
    assert_eq!(cell["ecgi"]["cellId"], cell_identity("cell-1"));
    assert_eq!(
        cell["ueInfo"][0]["erabInfo"][0]["erabQosParameters"]["qci"],
        9
    );
    let (_, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info"),
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!(ips(&v), ["10.0.0.1", "10.0.0.2"]);
    let (_, v) = api
        .call("GET", &format!("{RNI}/queries/rab_info"), Some(&beta), None)
        .await;
    assert_eq!(ips(&v), Vec::<String>::new());
    // Filters: by instance (its site's cells), cell, address; unmeasured ones match nothing.
    let (s, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info?app_ins_id={INST}&qci=9"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ips(&v), ["10.0.0.1"]);
    assert_eq!(v["RabInfo"]["appInstanceId"], INST);
    let other = cell_identity("cell-2");
    let (_, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info?cell_id={other}"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(ips(&v), Vec::<String>::new());
    let (_, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info?gtp_teid=7"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(ips(&v), Vec::<String>::new());
    let (s, _) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info?app_ins_id={INST}"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(s, 404, "another tenant's instance");
    let (s, _) = api
        .call(
            "GET",
            &format!("{RNI}/queries/rab_info?colour=red"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);

    // PLMN of an instance's site.
    let (s, _) = api
        .call(
            "GET",
            &format!("{RNI}/queries/plmn_info"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/plmn_info?app_ins_id={INST}"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["plmn"], json!([{"mcc": "272", "mnc": "01"}]));
    assert_eq!(v[0]["appInstanceId"], INST);

    // Layer 2: the active-UE count is an aggregate; per-UE rows only the consented one.
    let (s, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/layer2_meas"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["L2Meas"]["cellInfo"][0]["number_of_active_ue_dl_nongbr_cell"],
        2
    );
    assert_eq!(v["L2Meas"]["cellUEInfo"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["L2Meas"]["cellUEInfo"][0]["associateId"]["value"],
        "10.0.0.1"
    );
    let (_, v) = api
        .call(
            "GET",
            &format!("{RNI}/queries/layer2_meas?dl_total_prb_usage_cell=10"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(v["L2Meas"]["cellInfo"], json!([]));
}

fn cell_change(cb: &str, filter: Value) -> Value {
    json!({"CellChangeSubscription": {
        "subscriptionType": "CellChangeSubscription",
        "callbackReference": cb,
        "requestTestNotification": true,
        "filterCriteriaAssocHo": filter,
        "expiryDeadline": {"seconds": 4_000_000_000u64, "nanoSeconds": 0},
    }})
}

#[tokio::test]
async fn cell_change_subscriptions_report_completed_hand_overs() {
    let (api, alpha, beta, _me) = radio().await;
    let cb = "http://127.0.0.1:9/cb";
    let coll = format!("{RNI}/subscriptions");
    for (body, field) in [
        (
            json!({"RabEstSubscription": {"subscriptionType": "RabEstSubscription", "callbackReference": cb, "filterCriteriaAssocHo": {}}}),
            "RabEstSubscription",
        ),
        (
            json!({"subscriptionType": "RabEstSubscription", "callbackReference": cb, "filterCriteriaAssocHo": {}}),
            "subscriptionType",
        ),
        (
            json!({"subscriptionType": "CellChangeSubscription", "filterCriteriaAssocHo": {}}),
            "callbackReference",
        ),
        (
            json!({"subscriptionType": "CellChangeSubscription", "callbackReference": cb}),
            "filterCriteriaAssocHo",
        ),
        (cell_change(cb, json!({"hoStatus": [9]})), "hoStatus[0]"),
        (
            cell_change(
                cb,
                json!({"ecgi": [{"plmn": {"mcc": "27", "mnc": "01"}, "cellId": "0000001"}]}),
            ),
            "ecgi[0].plmn",
        ),
        (
            cell_change(cb, json!({"appInstanceId": "nobody-0"})),
            "appInstanceId",
        ),
    ] {
        let (s, e) = api.call("POST", &coll, Some(&alpha), Some(body)).await;
        assert_eq!(s, 400, "{field}: {e}");
        assert!(
            e["detail"].as_str().unwrap().contains(field),
            "{field}: {e}"
        );
    }
    let (s, e) = api
        .call(
            "POST",
            &coll,
            Some(&beta),
            Some(cell_change(cb, json!({"appInstanceId": INST}))),
        )
        .await;
    assert_eq!(s, 400, "beta cannot filter on alpha's instance: {e}");

    let (s, created) = api
        .call(
            "POST",
            &coll,
            Some(&alpha),
            Some(cell_change(cb, json!({"appInstanceId": INST}))),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let sub = &created["CellChangeSubscription"];
    assert_eq!(
        sub["filterCriteriaAssocHo"]["hoStatus"],
        json!([3]),
        "the default is answered"
    );
    let href = sub["_links"]["self"]["href"].as_str().unwrap().to_string();
    let (_, list) = api.call("GET", &coll, Some(&alpha), None).await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"],
        json!([{"href": href, "subscriptionType": "CellChangeSubscription"}])
    );
    let (_, list) = api
        .call(
            "GET",
            &format!("{coll}?subscription_type=rab_est"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"],
        json!([])
    );
    let (s, _) = api
        .call(
            "GET",
            &format!("{coll}?subscription_type=nope"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (_, list) = api.call("GET", &coll, Some(&beta), None).await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"],
        json!([])
    );
    for m in ["GET", "DELETE"] {
        let (s, _) = api.call(m, &href, Some(&beta), None).await;
        assert_eq!(s, 404);
    }
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0]["subscriptionNotification"]["notificationType"],
        "TestNotification"
    );

    // u1 hands over to cell-2; u2 (no consent) too; u1 moves onto a site without a PLMN.
    put_ue(&api, "u1", "10.0.0.1", "cell-2", &["alpha"]).await;
    put_ue(&api, "u2", "10.0.0.2", "cell-2", &[]).await;
    put_ue(&api, "u1", "10.0.0.1", "cell-9", &["alpha"]).await;
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    let n = &queued[1]["subscriptionNotification"];
    assert_eq!(n["notificationType"], "CellChangeNotification");
    assert_eq!(n["hoStatus"], 3);
    assert_eq!(n["srcEcgi"]["cellId"], cell_identity("cell-1"));
    assert_eq!(n["trgEcgi"][0]["cellId"], cell_identity("cell-2"));
    assert_eq!(n["associateId"], json!([{"type": 1, "value": "10.0.0.1"}]));
    assert_eq!(n["subscription"][0]["href"], href.as_str());

    // Replaced with a filter on another cell: the next hand-over is not reported.
    let other = cell_change(
        cb,
        json!({"ecgi": [{"plmn": {"mcc": "272", "mnc": "01"}, "cellId": cell_identity("cell-7")}]}),
    );
    let (s, v) = api.call("PUT", &href, Some(&alpha), Some(other)).await;
    assert_eq!(s, 200, "{v}");
    put_ue(&api, "u1", "10.0.0.1", "cell-1", &["alpha"]).await;
    assert_eq!(outbox(&api).await.len(), 2);
    let (s, _) = api.call("DELETE", &href, Some(&alpha), None).await;
    assert_eq!(s, 204);
    assert!(outbox(&api).await.is_empty());
}
