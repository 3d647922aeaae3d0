//! ETSI MEC 021 application mobility through the router: registrations with their
//! context-transfer state, deregistration, adjacent instances, and both subscription types
//! with the notifications their events queue.

mod support;

use mecfed_api::{
    mec::ams::{self, AmsRegistration},
    notify::Notification,
};
use mecfed_core::{Instance, InstanceId};
use mecfed_store::typed::Typed;
use serde_json::{Value, json};
use support::{Api, INST, instance_token, world};

const AMS: &str = "/amsi/v1";
const OTHER: &str = "arena-cork-a-1";

/// The outbox once the engines turned every change into notifications.
async fn outbox(api: &Api) -> Vec<Value> {
    api.settle().await;
    Typed::new(api.store.clone())
        .list::<Notification>()
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|v| v.value.body)
        .collect()
}

fn registration(instance: &str, state: u8) -> Value {
    json!({"RegistrationInfo": {
        "serviceConsumerId": {"appInstanceId": instance},
        "deviceInformation": [{"associateId": "10.0.0.1",
            "appMobilityServiceLevel": {"appMobilityServiceLevel": 3},
            "contextTransferState": state}],
        "expiryTime": 0,
    }})
}

#[tokio::test]
async fn registrations_follow_their_context_transfer() {
    let (api, alpha, beta, me) = world().await;
    let coll = format!("{AMS}/app_mobility_services");
    for (body, field) in [
        (
            json!({"serviceConsumerId": {}}),
            "serviceConsumerId.appInstanceId",
        ),
        (
            json!({"serviceConsumerId": {"appInstanceId": INST}, "deviceInformation": [{"associateId": ""}]}),
            "deviceInformation[0].associateId",
        ),
        (
            json!({"serviceConsumerId": {"appInstanceId": INST}, "deviceInformation": [{"associateId": "x", "appMobilityServiceLevel": {"appMobilityServiceLevel": 7}}]}),
            "appMobilityServiceLevel",
        ),
        (
            json!({"serviceConsumerId": {"appInstanceId": INST}, "deviceInformation": [{"associateId": "x", "contextTransferState": 2}]}),
            "contextTransferState",
        ),
        (
            json!({"appMobilityServiceId": "mine", "serviceConsumerId": {"appInstanceId": INST}}),
            "appMobilityServiceId",
        ),
        (
            json!({"serviceConsumerId": {"appInstanceId": INST}, "colour": "red"}),
            "colour",
        ),
    ] {
        let (s, e) = api.call("POST", &coll, Some(&me), Some(body)).await;
        assert_eq!(s, 400, "{field}: {e}");
        assert!(
            e["detail"].as_str().unwrap().contains(field),
            "{field}: {e}"
        );
    }
    let (s, e) = api
        .call("POST", &coll, Some(&beta), Some(registration(INST, 0)))
        .await;
    assert_eq!(s, 400, "beta registers for alpha's instance: {e}");
    let other = instance_token(&api, OTHER);
    let (s, _) = api
        .call("POST", &coll, Some(&other), Some(registration(INST, 0)))
        .await;
    assert_eq!(s, 400, "an instance registers itself only");

    // A subscription to completed move-outs of this instance.
    let (s, v) = api
        .call(
            "POST",
            &format!("{AMS}/subscriptions"),
            Some(&me),
            Some(json!({"MobilityProcedureSubscription": {
                "subscriptionType": "MobilityProcedureSubscription",
                "callbackReference": "http://127.0.0.1:9/cb",
                "filterCriteria": {"appInstanceId": INST, "mobilityStatus": [2]}}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    let (s, headers, created) = api
        .send(
            "POST",
            &coll,
            Some(&me),
            Some(("application/json", registration(INST, 1).to_string())),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let info = &created["RegistrationInfo"];
    let id = info["appMobilityServiceId"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("{coll}/{id}").as_str());
    assert_eq!(
        info["deviceInformation"][0]["contextTransferState"], 0,
        "registration starts untransferred"
    );
    let one = format!("{coll}/{id}");
    let (s, got) = api.call("GET", &one, Some(&alpha), None).await;
    assert_eq!(s, 200);
    assert_eq!(got, created);
    for m in ["GET", "DELETE"] {
        let (s, _) = api.call(m, &one, Some(&beta), None).await;
        assert_eq!(s, 404);
    }
    let (s, list) = api
        .call(
            "GET",
            &format!("{coll}?filter=(eq,serviceConsumerId/appInstanceId,{INST})&all_fields"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = api
        .call(
            "GET",
            &format!("{coll}?filter=(eq,serviceConsumerId/appInstanceId,{OTHER})"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(list, json!([]));
    let (s, _) = api
        .call(
            "GET",
            &format!("{coll}?filter=(gt,expiryTime,1)"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (_, list) = api.call("GET", &coll, Some(&beta), None).await;
    assert_eq!(list, json!([]));
    assert!(outbox(&api).await.is_empty());

    // The instance reports the user's context transferred: subscribers hear COMPLETED.
    let (s, v) = api
        .call("PUT", &one, Some(&me), Some(registration(INST, 1)))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["RegistrationInfo"]["deviceInformation"][0]["contextTransferState"],
        1
    );
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let n = &queued[0]["MobilityProcedureNotification"];
    assert_eq!(n["mobilityStatus"], 2);
    assert_eq!(n["associateId"], json!(["10.0.0.1"]));
    // The same state again is no new event; the instance cannot be changed.
    let (s, _) = api
        .call("PUT", &one, Some(&me), Some(registration(INST, 1)))
        .await;
    assert_eq!(s, 200);
    assert_eq!(outbox(&api).await.len(), 1);
    let (s, _) = api
        .call("PUT", &one, Some(&alpha), Some(registration(OTHER, 1)))
        .await;
    assert_eq!(s, 400);

    let (s, _) = api
        .call("POST", &format!("{one}/deregister_task"), Some(&me), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = api.call("GET", &one, Some(&me), None).await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call("POST", &format!("{one}/deregister_task"), Some(&me), None)
        .await;
    assert_eq!(s, 404);

    // An expired registration is gone.
    let (_, v) = api
        .call("POST", &coll, Some(&me), Some(registration(INST, 0)))
        .await;
    let id = v["RegistrationInfo"]["appMobilityServiceId"]
        .as_str()
        .unwrap()
        .to_string();
    let typed = Typed::new(api.store.clone());
    let mut stored = typed
        .get::<AmsRegistration>(&id)
        .await
        .unwrap()
        .unwrap()
        .value;
    stored.expires_at = Some(1);
    typed.put(&stored).await.unwrap();
    let (s, _) = api
        .call("GET", &format!("{coll}/{id}"), Some(&me), None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn subscriptions_and_adjacent_instances() {
    let (api, alpha, beta, me) = world().await;
    let coll = format!("{AMS}/subscriptions");
    let cb = "http://127.0.0.1:9/cb";
    for (body, field) in [
        (
            json!({"subscriptionType": "Other", "callbackReference": cb, "filterCriteria": {}}),
            "subscriptionType",
        ),
        (
            json!({"subscriptionType": "AdjacentAppInfoSubscription", "callbackReference": cb, "filterCriteria": {}}),
            "filterCriteria.appInstanceId",
        ),
        (
            json!({"subscriptionType": "AdjacentAppInfoSubscription", "callbackReference": cb, "filterCriteria": {"appInstanceId": INST, "mobilityStatus": [1]}}),
            "filterCriteria",
        ),
        (
            json!({"subscriptionType": "MobilityProcedureSubscription", "callbackReference": cb, "filterCriteria": {"mobilityStatus": [4]}}),
            "mobilityStatus[0]",
        ),
        (
            json!({"subscriptionType": "MobilityProcedureSubscription", "filterCriteria": {}}),
            "callbackReference",
        ),
        (
            json!({"subscriptionType": "MobilityProcedureSubscription", "callbackReference": cb, "filterCriteria": {"appInstanceId": "nobody-0"}}),
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
    let (s, created) = api
        .call(
            "POST",
            &coll,
            Some(&alpha),
            Some(json!({"MobilityProcedureSubscription": {
            "subscriptionType": "MobilityProcedureSubscription", "callbackReference": cb,
            "requestTestNotification": true,
            "filterCriteria": {"associateId": [{"type": 1, "value": "10.0.0.7"}]},
            "expiryDeadline": {"seconds": 4_000_000_000u64, "nanoSeconds": 0}}})),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let sub = &created["MobilityProcedureSubscription"];
    assert_eq!(
        sub["filterCriteria"]["mobilityStatus"],
        json!([1]),
        "the default is answered"
    );
    let href = sub["_links"]["self"]["href"].as_str().unwrap().to_string();
    let (s, adj) = api
        .call(
            "POST",
            &coll,
            Some(&me),
            Some(json!({"AdjacentAppInfoSubscription": {
            "subscriptionType": "AdjacentAppInfoSubscription", "callbackReference": cb,
            "filterCriteria": {"appInstanceId": INST}}})),
        )
        .await;
    assert_eq!(s, 201, "{adj}");
    let (_, list) = api
        .call(
            "GET",
            &format!("{coll}?subscriptiontype=mobility_proc"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"],
        json!([{"href": href, "subscriptionType": "MobilityProcedureSubscription"}])
    );
    let (_, list) = api.call("GET", &coll, Some(&alpha), None).await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, list) = api.call("GET", &coll, Some(&me), None).await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "an instance sees its own"
    );
    let (_, list) = api.call("GET", &coll, Some(&beta), None).await;
    assert_eq!(
        list["SubscriptionLinkList"]["_links"]["subscription"],
        json!([])
    );
    let (s, _) = api
        .call(
            "GET",
            &format!("{coll}?subscriptiontype=nope"),
            Some(&alpha),
            None,
        )
        .await;
    assert_eq!(s, 400);
    for m in ["GET", "DELETE"] {
        let (s, _) = api.call(m, &href, Some(&beta), None).await;
        assert_eq!(s, 404);
    }
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0]["TestNotification"]["_links"]["subscription"]["href"],
        href.as_str()
    );

    // The mobility service triggers a move-out of device 10.0.0.7 to the other instance.
    let typed = Typed::new(api.store.clone());
    let target = typed.get::<Instance>(OTHER).await.unwrap().unwrap().value;
    ams::mobility_procedure(
        &typed,
        &InstanceId::new(INST).unwrap(),
        &[json!("10.0.0.7")],
        1,
        Some(&target),
    )
    .await
    .unwrap();
    ams::mobility_procedure(
        &typed,
        &InstanceId::new(INST).unwrap(),
        &[json!("10.0.0.8")],
        1,
        None,
    )
    .await
    .unwrap();
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 2, "only the subscribed device: {queued:?}");
    let n = queued
        .iter()
        .find_map(|q| q.get("MobilityProcedureNotification"))
        .expect("a mobility notification");
    assert_eq!(n["mobilityStatus"], 1);
    assert_eq!(n["targetAppInfo"]["appInstanceId"], OTHER);
    assert_eq!(
        n["targetAppInfo"]["commInterface"]["ipAddresses"][0],
        json!({"host": "10.0.0.1", "port": 4000})
    );

    // Adjacent instances: none Ready yet; the other confirms ready and INST hears of it.
    let (s, v) = api
        .call(
            "GET",
            &format!("{AMS}/queries/adjacent_app_instances"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([]));
    let other = instance_token(&api, OTHER);
    let (s, _) = api
        .call(
            "POST",
            &format!("/mec_app_support/v1/applications/{OTHER}/confirm_ready"),
            Some(&other),
            Some(json!({"indication": "READY"})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, v) = api
        .call(
            "GET",
            &format!("{AMS}/queries/adjacent_app_instances"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["appInstanceId"], OTHER);
    assert_eq!(v[0]["appDId"], "arena");
    assert_eq!(v[0]["mecHostInformation"]["hostName"], "cork-a");
    let (_, v) = api
        .call(
            "GET",
            &format!("{AMS}/queries/adjacent_app_instances?filter=(eq,appDId,other)"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(v, json!([]));
    let (_, v) = api
        .call(
            "GET",
            &format!("{AMS}/queries/adjacent_app_instances"),
            Some(&beta),
            None,
        )
        .await;
    assert_eq!(v, json!([]));
    let queued = outbox(&api).await;
    assert_eq!(queued.len(), 3, "{queued:?}");
    let n = queued
        .iter()
        .find_map(|q| q.get("AdjacentAppInfoNotification"))
        .expect("an adjacency notification");
    assert_eq!(n["adjacentAppInfo"][0]["appInstanceId"], OTHER);

    let (s, _) = api.call("DELETE", &href, Some(&alpha), None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("GET", &href, Some(&alpha), None).await;
    assert_eq!(s, 404);
}
