//! What the ECS rollout double ([`crate::rollout`]) does to the rest of AWS, as ECS does: it
//! moves the weights of a production (or test) listener rule through ELBv2 `ModifyRule`, and it
//! reads CloudWatch alarm states with `DescribeAlarms`, both query-protocol calls sent straight to
//! moto (not through the proxy). moto checks no signature but picks its regional backend from the
//! credential scope, so every call names its region there.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// Percent-encoding of a form value (RFC 3986 unreserved characters kept).
pub fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query-protocol call (`Action=…&Version=…`) to moto on `port` as `service` (the signing name,
/// e.g. `elasticloadbalancing`, `monitoring`) in `region`: the status code and the body.
pub fn query(port: u16, region: &str, service: &str, params: &[(String, String)]) -> io::Result<(u16, String)> {
    let body: String =
        params.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect::<Vec<_>>().join("&");
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\nAuthorization: AWS4-HMAC-SHA256 Credential=tap-rollout-double/20250101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Listener-rule weights for `green_percent` of the traffic on `green` and the rest on `blue`, as
/// ELBv2 takes them (integers 0-999): whole percents as they are, tenths of a percent in tenths.
pub fn weights(green_percent: f64) -> (u32, u32) {
    let tenths = (green_percent.clamp(0.0, 100.0) * 10.0).round() as u32;
    if tenths.is_multiple_of(10) {
        (100 - tenths / 10, tenths / 10)
    } else {
        (1000 - tenths, tenths)
    }
}

/// `ModifyRule` of `rule` to forward to `blue` and `green` with `green_percent` on green.
pub fn shift(port: u16, region: &str, rule: &str, blue: &str, green: &str, green_percent: f64) -> io::Result<()> {
    let (blue_weight, green_weight) = weights(green_percent);
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    let group = "Actions.member.1.ForwardConfig.TargetGroups.member";
    let params = vec![
        p("Action", "ModifyRule"),
        p("Version", "2015-12-01"),
        p("RuleArn", rule),
        p("Actions.member.1.Type", "forward"),
        p("Actions.member.1.Order", "1"),
        p(&format!("{group}.1.TargetGroupArn"), blue),
        p(&format!("{group}.1.Weight"), &blue_weight.to_string()),
        p(&format!("{group}.2.TargetGroupArn"), green),
        p(&format!("{group}.2.Weight"), &green_weight.to_string()),
    ];
    let (status, body) = query(port, region, "elasticloadbalancing", &params)?;
    if status == 200 {
        Ok(())
    } else {
        Err(io::Error::other(format!("ModifyRule {rule} answered HTTP {status}: {body}")))
    }
}

/// A CloudWatch metric alarm as ECS reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// `AlarmName`.
    pub name: String,
    /// `StateValue`: `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// `Period` × `EvaluationPeriods`, in seconds: how long the alarm needs to see a problem.
    pub window_seconds: u64,
}

/// The text of the first `<name>…</name>` in an XML answer.
pub(crate) fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// The alarms of a `DescribeAlarms` answer (each alarm is the text from its `AlarmName` to the next).
pub fn parse_alarms(xml: &str) -> Vec<Alarm> {
    let metric = xml.split("<MetricAlarms>").nth(1).unwrap_or_default();
    metric
        .split("<AlarmName>")
        .skip(1)
        .filter_map(|part| {
            let part = format!("<AlarmName>{part}");
            let number = |n: &str| tag(&part, n).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
            Some(Alarm {
                name: tag(&part, "AlarmName")?.to_string(),
                state: tag(&part, "StateValue").unwrap_or_default().to_string(),
                window_seconds: number("Period") * number("EvaluationPeriods").max(1),
            })
        })
        .collect()
}

/// `DescribeAlarms` of these names in `region`.
pub fn describe_alarms(port: u16, region: &str, names: &[String]) -> io::Result<Vec<Alarm>> {
    let mut params =
        vec![("Action".to_string(), "DescribeAlarms".to_string()), ("Version".into(), "2010-08-01".into())];
    for (i, n) in names.iter().enumerate() {
        params.push((format!("AlarmNames.member.{}", i + 1), n.clone()));
    }
    let (status, body) = query(port, region, "monitoring", &params)?;
    if status == 200 {
        Ok(parse_alarms(&body))
    } else {
        Err(io::Error::other(format!("DescribeAlarms answered HTTP {status}: {body}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_as_elbv2_takes_them() {
        assert_eq!(weights(0.0), (100, 0));
        assert_eq!(weights(10.0), (90, 10));
        assert_eq!(weights(100.0), (0, 100));
        assert_eq!(weights(2.5), (975, 25));
    }

    #[test]
    fn alarms_are_read_with_their_state_and_window() {
        let xml = "<DescribeAlarmsResponse><DescribeAlarmsResult><CompositeAlarms/><MetricAlarms><member><AlarmName>a1</AlarmName><StateValue>ALARM</StateValue><Dimensions><member><Name>ServiceName</Name><Value>x</Value></member></Dimensions><Period>60</Period><EvaluationPeriods>3</EvaluationPeriods></member><member><AlarmName>b</AlarmName><StateValue>OK</StateValue><Period>60</Period><EvaluationPeriods>1</EvaluationPeriods></member></MetricAlarms></DescribeAlarmsResult></DescribeAlarmsResponse>";
        let alarms = parse_alarms(xml);
        assert_eq!(
            alarms,
            vec![
                Alarm { name: "a1".into(), state: "ALARM".into(), window_seconds: 180 },
                Alarm { name: "b".into(), state: "OK".into(), window_seconds: 60 },
            ]
        );
        assert_eq!(form_encode("arn:aws:x/y z"), "arn%3Aaws%3Ax%2Fy%20z");
    }
}
