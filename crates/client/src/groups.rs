//! Consumer groups (`/api/v1/groups`, see `docs/groups.md`): [`GroupSpec`] to create one,
//! [`GroupInfo`] to see how it is doing, [`Delivery`] for what a member pulls, and the
//! dead-letter queue's [`DlqEntry`] and [`DlqPage`]. The [`Client`] methods that speak
//! to these endpoints are at the end of this file.
//!
//! Durations travel as strings with a unit (`250ms`, `30s`, `5m`, `1h`, `7d`);
//! [`format_duration`] and [`parse_duration`] (from `tributary_core::duration`) are the
//! two directions.

use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use tributary_core::{AckWait, Event, Filter, Ordering, Position, Start, Timestamp};

use crate::client::Client;
use crate::error::ClientError;

use tributary_core::duration::text as duration_text;
pub use tributary_core::duration::{ParseDurationError, format_duration, parse_duration};

/// What [`Client::create_group`] creates. Only the name is required; every `None` takes
/// the server's default (start `latest`, ack_wait 30 s, 5 deliveries, backoff 1 s, 5 s,
/// 30 s, 100 in flight per member, per-key ordering).
///
/// ```
/// use std::time::Duration;
/// use tributary_client::GroupSpec;
/// use tributary_core::{Filter, Start, TopicPattern};
///
/// let spec = GroupSpec::new("billing")
///     .filter(Filter::topic(TopicPattern::new("orders.>").unwrap()))
///     .start(Start::Earliest)
///     .ack_wait(Duration::from_millis(1500))
///     .backoff(vec![Duration::from_secs(1), Duration::from_secs(30)]);
/// assert_eq!(
///     serde_json::to_string(&spec).unwrap(),
///     r#"{"name":"billing","filter":{"topics":["orders.>"]},"start":"earliest","ack_wait":"1500ms","backoff":["1s","30s"]}"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// 1 to 128 characters of `A-Z a-z 0-9 _ - .`.
    pub name: String,
    /// Which events the group delivers; the empty filter (the default) means every event.
    pub filter: Filter,
    /// Where the group starts reading.
    pub start: Option<Start>,
    /// How long a member may hold a delivery before it comes back.
    pub ack_wait: Option<Duration>,
    /// Deliveries of one event before it is parked in the dead-letter queue.
    pub max_deliveries: Option<u32>,
    /// The delay before the n-th redelivery is `backoff[n-1]`; the last one repeats. An
    /// empty list redelivers at once.
    pub backoff: Option<Vec<Duration>>,
    /// Unacked deliveries one member may hold.
    pub max_in_flight: Option<u32>,
    /// Whether one key's (topic's) events go out one at a time, in order.
    pub ordering: Option<Ordering>,
}

impl GroupSpec {
    /// A group named `name` that takes the server's default for everything else.
    pub fn new(name: impl Into<String>) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            filter: Filter::default(),
            start: None,
            ack_wait: None,
            max_deliveries: None,
            backoff: None,
            max_in_flight: None,
            ordering: None,
        }
    }

    /// Sets [`GroupSpec::filter`].
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets [`GroupSpec::start`].
    pub fn start(mut self, start: Start) -> Self {
        self.start = Some(start);
        self
    }

    /// Sets [`GroupSpec::ack_wait`].
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = Some(ack_wait);
        self
    }

    /// Sets [`GroupSpec::max_deliveries`].
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = Some(n);
        self
    }

    /// Sets [`GroupSpec::backoff`].
    pub fn backoff(mut self, delays: Vec<Duration>) -> Self {
        self.backoff = Some(delays);
        self
    }

    /// Sets [`GroupSpec::max_in_flight`].
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Sets [`GroupSpec::ordering`].
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = Some(ordering);
        self
    }
}

/// The body of `POST /api/v1/groups`: unset fields are left out, so the server's
/// defaults apply, and the server refuses unknown fields.
impl Serialize for GroupSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        if !self.filter.is_all() {
            map.serialize_entry("filter", &self.filter)?;
        }
        match self.start {
            None => {}
            Some(Start::Earliest) => map.serialize_entry("start", "earliest")?,
            Some(Start::Latest) => map.serialize_entry("start", "latest")?,
            Some(Start::After(position)) => map.serialize_entry("start", &position)?,
        }
        if let Some(d) = self.ack_wait {
            map.serialize_entry("ack_wait", &format_duration(d))?;
        }
        if let Some(n) = self.max_deliveries {
            map.serialize_entry("max_deliveries", &n)?;
        }
        if let Some(list) = &self.backoff {
            let list: Vec<String> = list.iter().map(|d| format_duration(*d)).collect();
            map.serialize_entry("backoff", &list)?;
        }
        if let Some(n) = self.max_in_flight {
            map.serialize_entry("max_in_flight", &n)?;
        }
        if let Some(ordering) = self.ordering {
            map.serialize_entry("ordering", &ordering)?;
        }
        map.end()
    }
}

/// A group's settings and how it is doing (`GET /api/v1/groups/{g}`). Serializes back
/// into the server's JSON shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// Which events it delivers.
    #[serde(default)]
    pub filter: Filter,
    /// How long a member may hold a delivery before it comes back.
    #[serde(with = "duration_text")]
    pub ack_wait: Duration,
    /// Deliveries of one event before it is parked.
    pub max_deliveries: u32,
    /// Delays before the 1st, 2nd, ... redelivery; the last one repeats.
    #[serde(with = "duration_text::list")]
    pub backoff: Vec<Duration>,
    /// Unacked deliveries one member may hold.
    pub max_in_flight: u32,
    /// How deliveries are ordered.
    pub ordering: Ordering,
    /// When the group was created.
    pub created_at: Timestamp,
    /// Every matching event at or before this position is acked or parked.
    pub committed: Position,
    /// The log's newest position.
    pub head: Position,
    /// Matching events not yet acked or parked: exact once the group has read up to
    /// `head`, an upper bound before that.
    pub lag: u64,
    /// Deliveries handed out and not yet acked, nacked or expired.
    pub in_flight: u64,
    /// Events waiting out a backoff before their redelivery.
    pub waiting: u64,
    /// Entries in the dead-letter queue.
    pub dlq_size: u64,
    /// Deliveries made, redeliveries included.
    pub delivered: u64,
    /// Deliveries that were redeliveries.
    pub redelivered: u64,
    /// Events parked in the dead-letter queue so far.
    pub parked: u64,
    /// Times retention removed matching events before the group read them.
    #[serde(default)]
    pub truncations: u64,
    /// The last such time, if any.
    #[serde(default)]
    pub last_truncation: Option<Truncation>,
    /// The members the server knows of.
    #[serde(default)]
    pub members: Vec<MemberInfo>,
}

/// Retention removed events of a group's topics after position `after`, up to
/// `pruned_through`, before the group read them (see [`GroupInfo::last_truncation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// The group's read cursor at the time.
    pub after: Position,
    /// The highest position removed from the group's topics.
    pub pruned_through: Position,
    /// When the group noticed.
    pub at: Timestamp,
}

/// One member of a group, as [`GroupInfo::members`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The name the member pulls or streams with.
    pub member: String,
    /// Deliveries it holds unacked.
    pub in_flight: u32,
    /// When it last pulled or streamed, if the server saw it since it started.
    #[serde(default)]
    pub last_seen: Option<Timestamp>,
}

/// One event handed to a member. Settle it with [`Client::ack`], [`Client::nack`] or
/// [`Client::term`] by its `delivery_id`, before the group's `ack_wait` runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Names this delivery (not the event): a redelivery of the same event gets a new
    /// one, and the old one is then stale.
    pub delivery_id: String,
    /// 1 for the first delivery of the event, 2 for the first redelivery, ...
    pub attempt: u32,
    /// The event.
    pub event: Event,
}

/// An event parked in a group's dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// The entry's id: the event's position. [`Client::replay`] and
    /// [`Client::discard`] take it.
    pub id: Position,
    /// The event, kept whole.
    pub event: Event,
    /// How many times it was delivered.
    pub attempts: u32,
    /// Why the last attempt failed (a member's nack or term reason, or
    /// `ack_wait expired`).
    #[serde(default)]
    pub reason: String,
    /// When it was parked.
    pub parked_at: Timestamp,
}

/// One page of a dead-letter queue, in position order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqPage {
    /// The entries.
    pub entries: Vec<DlqEntry>,
    /// Where the next page starts (pass it as `cursor`); `None` when this page is the
    /// last.
    #[serde(default)]
    pub next_cursor: Option<Position>,
}

#[derive(Serialize)]
struct Ids<'a> {
    delivery_ids: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    durable: Option<bool>,
}

impl<'a> Ids<'a> {
    fn new<S: AsRef<str>>(ids: &'a [S]) -> Self {
        Ids {
            delivery_ids: ids.iter().map(AsRef::as_ref).collect(),
            delay: None,
            reason: None,
            durable: None,
        }
    }
}

/// Consumer groups: see `docs/groups.md` for what each call means on the server.
impl Client {
    /// The URL of `api/v1/groups/{group}/{rest...}`, with the name as one path segment.
    fn group_endpoint(&self, group: &str, rest: &[&str]) -> Result<url::Url, ClientError> {
        // The URL standard drops such segments (even percent-encoded), so the request
        // would reach another resource.
        if group.is_empty() || group == "." || group == ".." {
            return Err(ClientError::InvalidGroupName {
                name: group.to_owned(),
            });
        }
        let mut url = self.endpoint("api/v1/groups");
        url.path_segments_mut()
            .expect("an http base has path segments")
            .push(group)
            .extend(rest);
        Ok(url)
    }

    /// Creates a group (`POST /api/v1/groups`) and returns it as the server made it. A
    /// name that exists fails with code `group_exists` (see [`ClientError::code`]).
    pub async fn create_group(&self, spec: &GroupSpec) -> Result<GroupInfo, ClientError> {
        let req = self.http().post(self.endpoint("api/v1/groups")).json(spec);
        self.send_json(req, "the created group").await
    }

    /// One group's settings, counters and members (`GET /api/v1/groups/{g}`). An
    /// unknown group fails with code `not_found`.
    pub async fn group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        let req = self.http().get(self.group_endpoint(group, &[])?);
        self.send_json(req, "the group").await
    }

    /// Every group (`GET /api/v1/groups`).
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            groups: Vec<GroupInfo>,
        }
        let req = self.http().get(self.endpoint("api/v1/groups"));
        let answer: Answer = self.send_json(req, "the group list").await?;
        Ok(answer.groups)
    }

    /// Removes a group and all its state, dead-letter queue included
    /// (`DELETE /api/v1/groups/{g}`).
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let req = self.http().delete(self.group_endpoint(group, &[])?);
        self.send(req).await.map(drop)
    }

    /// Takes up to `max` deliveries (1 to 1000) as `member`, waiting up to `wait` (at
    /// most 60 s) for the first one; an empty answer means none came in time
    /// (`POST /api/v1/groups/{g}/pull`). The member holds what it pulled until it acks,
    /// nacks or terms it, or the group's `ack_wait` runs out.
    pub async fn pull(
        &self,
        group: &str,
        member: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            member: &'a str,
            max: usize,
            wait_ms: u128,
        }
        #[derive(Deserialize)]
        struct Answer {
            deliveries: Vec<Delivery>,
        }
        let req = self
            .http()
            .post(self.group_endpoint(group, &["pull"])?)
            .json(&Body {
                member,
                max,
                wait_ms: wait.as_millis(),
            });
        // The server may hold the request for all of `wait` before it answers.
        let answer: Answer = self
            .send_json_within(req, "the pulled deliveries", wait)
            .await?;
        Ok(answer.deliveries)
    }

    /// Acks deliveries: their events are done (`POST /api/v1/groups/{g}/ack`). Returns
    /// how many were acked; an empty list sends nothing.
    ///
    /// The ids are checked before any is applied: one that is not a current delivery
    /// (already acked, or expired and handed out again) fails the call with code
    /// `stale_delivery` and changes nothing; a malformed one with `invalid_delivery_id`.
    ///
    /// The answer waits until the acks are durable; [`Client::ack_with`] can ask for an
    /// answer once they are applied.
    pub async fn ack<S: AsRef<str>>(&self, group: &str, ids: &[S]) -> Result<u64, ClientError> {
        self.ack_with(group, ids, AckWait::Durable).await
    }

    /// [`Client::ack`], saying when to answer: with [`AckWait::Applied`] the server
    /// answers before it writes the acks (`"durable": false`), so a member acking one
    /// event at a time does not wait for a disk flush per ack; a server crash before the
    /// write delivers those events once more.
    pub async fn ack_with<S: AsRef<str>>(
        &self,
        group: &str,
        ids: &[S],
        wait: AckWait,
    ) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            acked: u64,
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let req = self
            .http()
            .post(self.group_endpoint(group, &["ack"])?)
            .json(&Ids {
                durable: (wait == AckWait::Applied).then_some(false),
                ..Ids::new(ids)
            });
        let answer: Answer = self.send_json(req, "the ack answer").await?;
        Ok(answer.acked)
    }

    /// Gives deliveries back for redelivery after `delay` (or, with `None`, the group's
    /// backoff), recording `reason`, which the dead-letter queue shows if the event is
    /// parked (`POST /api/v1/groups/{g}/nack`). Returns how many were nacked; an empty
    /// list sends nothing. Fails like [`Client::ack`].
    pub async fn nack<S: AsRef<str>>(
        &self,
        group: &str,
        ids: &[S],
        delay: Option<Duration>,
        reason: Option<&str>,
    ) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            nacked: u64,
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let body = Ids {
            delay: delay.map(format_duration),
            reason,
            ..Ids::new(ids)
        };
        let req = self
            .http()
            .post(self.group_endpoint(group, &["nack"])?)
            .json(&body);
        let answer: Answer = self.send_json(req, "the nack answer").await?;
        Ok(answer.nacked)
    }

    /// Parks deliveries' events in the dead-letter queue at once, with `reason`
    /// (`POST /api/v1/groups/{g}/term`). Returns how many were parked; an empty list
    /// sends nothing. Fails like [`Client::ack`].
    pub async fn term<S: AsRef<str>>(
        &self,
        group: &str,
        ids: &[S],
        reason: &str,
    ) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            terminated: u64,
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let body = Ids {
            reason: Some(reason),
            ..Ids::new(ids)
        };
        let req = self
            .http()
            .post(self.group_endpoint(group, &["term"])?)
            .json(&body);
        let answer: Answer = self.send_json(req, "the term answer").await?;
        Ok(answer.terminated)
    }

    /// One page of the dead-letter queue, in position order, starting after `cursor`
    /// (`None`: from the start) with at most `limit` entries (1 to 1000; `None`: the
    /// server's default, 100) (`GET /api/v1/groups/{g}/dlq`). Continue with
    /// [`DlqPage::next_cursor`] while it is set.
    pub async fn dlq(
        &self,
        group: &str,
        limit: Option<usize>,
        cursor: Option<Position>,
    ) -> Result<DlqPage, ClientError> {
        let mut params = Vec::new();
        if let Some(limit) = limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor.to_string()));
        }
        let req = self
            .http()
            .get(self.group_endpoint(group, &["dlq"])?)
            .query(&params);
        self.send_json(req, "the dead-letter page").await
    }

    /// Puts dead-letter entries back into delivery with fresh attempts: those with the
    /// given ids, or (`None`) all of them (`POST /api/v1/groups/{g}/dlq/replay`).
    /// Returns how many were replayed.
    pub async fn replay(&self, group: &str, ids: Option<&[Position]>) -> Result<u64, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            ids: Option<&'a [Position]>,
        }
        #[derive(Deserialize)]
        struct Answer {
            replayed: u64,
        }
        let req = self
            .http()
            .post(self.group_endpoint(group, &["dlq", "replay"])?)
            .json(&Body { ids });
        let answer: Answer = self.send_json(req, "the replay answer").await?;
        Ok(answer.replayed)
    }

    /// Drops one dead-letter entry for good (`DELETE /api/v1/groups/{g}/dlq/{id}`).
    /// An id with no entry fails with code `not_found`.
    pub async fn discard(&self, group: &str, id: Position) -> Result<(), ClientError> {
        let id = id.to_string();
        let req = self
            .http()
            .delete(self.group_endpoint(group, &["dlq", &id])?);
        self.send(req).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::TopicPattern;

    #[test]
    fn a_bare_spec_sends_only_its_name() {
        let json = serde_json::to_value(GroupSpec::new("g")).unwrap();
        assert_eq!(json, serde_json::json!({"name": "g"}));
    }

    #[test]
    fn a_full_spec_uses_the_wire_names_and_units() {
        let spec = GroupSpec::new("billing")
            .filter(Filter {
                topics: vec![TopicPattern::new("orders.>").unwrap()],
                names: vec!["created".into()],
                ..Filter::default()
            })
            .start(Start::After(41))
            .ack_wait(Duration::from_secs(30))
            .max_deliveries(5)
            .backoff(vec![
                Duration::from_millis(250),
                Duration::from_secs(5),
                Duration::from_secs(60),
            ])
            .max_in_flight(100)
            .ordering(Ordering::None);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({
                "name": "billing",
                "filter": {"topics": ["orders.>"], "names": ["created"]},
                "start": 41,
                "ack_wait": "30s",
                "max_deliveries": 5,
                "backoff": ["250ms", "5s", "1m"],
                "max_in_flight": 100,
                "ordering": "none",
            })
        );
        let json = |start| serde_json::to_value(GroupSpec::new("g").start(start)).unwrap();
        assert_eq!(json(Start::Earliest)["start"], "earliest");
        assert_eq!(json(Start::Latest)["start"], "latest");
        // An empty backoff is a setting (redeliver at once), not an absence.
        let spec = GroupSpec::new("g").backoff(vec![]);
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["backoff"],
            serde_json::json!([])
        );
    }

    const EVENT: &str = r#"{"position":1201,"topic":"orders.eu","seq":3,"parent_seq":2,"name":"created","args":{"total":1},"id":"e1","timestamp":"2026-11-22T03:00:00.000Z"}"#;

    #[test]
    fn deliveries_and_dlq_pages_parse() {
        let answer =
            format!(r#"{{"deliveries":[{{"delivery_id":"1201.2","attempt":2,"event":{EVENT}}}]}}"#);
        #[derive(Deserialize)]
        struct Answer {
            deliveries: Vec<Delivery>,
        }
        let answer: Answer = serde_json::from_str(&answer).unwrap();
        let d = &answer.deliveries[0];
        assert_eq!((d.delivery_id.as_str(), d.attempt), ("1201.2", 2));
        assert_eq!(
            (
                d.event.position,
                d.event.topic.as_str(),
                d.event.args.as_json()
            ),
            (1201, "orders.eu", r#"{"total":1}"#)
        );

        let page = format!(
            r#"{{"entries":[{{"id":1201,"event":{EVENT},"attempts":5,"reason":"exit status 1","parked_at":"2026-11-22T03:05:00.000Z"}}],"next_cursor":1201}}"#
        );
        let page: DlqPage = serde_json::from_str(&page).unwrap();
        assert_eq!(page.next_cursor, Some(1201));
        let entry = &page.entries[0];
        assert_eq!(
            (entry.id, entry.attempts, entry.reason.as_str()),
            (1201, 5, "exit status 1")
        );
        assert_eq!(entry.event.position, 1201);
        let last: DlqPage = serde_json::from_str(r#"{"entries":[],"next_cursor":null}"#).unwrap();
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn group_info_parses_and_writes_back_the_same_shape() {
        let text = r#"{"name":"billing","filter":{"topics":["orders.>"]},"ack_wait":"1500ms",
            "max_deliveries":5,"backoff":["1s","5s","30s"],"max_in_flight":100,
            "ordering":"per_key","created_at":"2026-11-22T03:00:00.000Z","committed":1200,
            "head":1450,"lag":37,"in_flight":12,"waiting":2,"dlq_size":1,"delivered":1290,
            "redelivered":14,"parked":1,"truncations":1,"last_truncation":
              {"after":40,"pruned_through":90,"at":"2026-11-22T03:04:00.000Z"},"members":[
              {"member":"worker-1","in_flight":6,"last_seen":"2026-11-22T03:05:00.000Z"},
              {"member":"worker-2","in_flight":0,"last_seen":null}]}"#;
        let info: GroupInfo = serde_json::from_str(text).unwrap();
        assert_eq!(info.ack_wait, Duration::from_millis(1500));
        assert_eq!(info.backoff[2], Duration::from_secs(30));
        assert_eq!(info.ordering, Ordering::PerKey);
        assert_eq!((info.committed, info.head, info.lag), (1200, 1450, 37));
        assert_eq!(info.members.len(), 2);
        assert_eq!(info.members[1].last_seen, None);
        assert_eq!(
            info.last_truncation.map(|t| (t.after, t.pruned_through)),
            Some((40, 90))
        );
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&info).unwrap(), original);
    }

    #[test]
    fn group_names_become_one_path_segment() {
        let c = Client::new("http://example.com/prefix").unwrap();
        assert_eq!(
            c.group_endpoint("billing.eu", &["dlq", "replay"])
                .unwrap()
                .as_str(),
            "http://example.com/prefix/api/v1/groups/billing.eu/dlq/replay"
        );
        assert_eq!(
            c.group_endpoint("a/b?c", &[]).unwrap().as_str(),
            "http://example.com/prefix/api/v1/groups/a%2Fb%3Fc"
        );
        for bad in ["", ".", ".."] {
            assert!(matches!(
                c.group_endpoint(bad, &["pull"]),
                Err(ClientError::InvalidGroupName { .. })
            ));
        }
    }
}
