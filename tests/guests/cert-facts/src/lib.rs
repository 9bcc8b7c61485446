//! Test fixture: reads the client certificate field by field through the
//! `connection` accessors of contract 0.1.2 and answers `200` with them
//! as a JSON document, so a test can compare each field with the
//! certificate it sent. With `declare: true` its constructor declares that
//! it reads the certificate (`declarations.reads-client-certificate`).
//!
//! With `only: thumbprint` it reads one field and lets the request go on
//! with it in `x-client-thumbprint` (the per-request cost benchmark).
use gatehouse_sdk::{
    declarations, export_policy, Connection, Decision, Header, HeaderEdit, Policy, Request,
    ResponseSpec,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    declare: bool,
    #[serde(default)]
    only: Option<String>,
}

pub struct CertFacts {
    only_thumbprint: bool,
}

impl Policy for CertFacts {
    type Config = Config;
    fn new(c: Config) -> Result<Self, String> {
        if c.declare {
            declarations::reads_client_certificate();
        }
        let only_thumbprint = match c.only.as_deref() {
            None => false,
            Some("thumbprint") => true,
            Some(other) => return Err(format!("only: `{other}`: use `thumbprint`")),
        };
        Ok(CertFacts { only_thumbprint })
    }

    fn on_request(&self, _req: &Request, conn: &Connection) -> Decision {
        if self.only_thumbprint {
            let edits = conn
                .client_cert_thumbprint_sha256()
                .map(|t| {
                    vec![HeaderEdit::Set(Header {
                        name: "x-client-thumbprint".into(),
                        value: t,
                    })]
                })
                .unwrap_or_default();
            return Decision::Continue(edits);
        }
        let facts = serde_json::json!({
            "present": conn.has_client_certificate(),
            "subject": conn.client_cert_subject(),
            "issuer": conn.client_cert_issuer(),
            "common_name": conn.client_cert_common_name(),
            "serial": conn.client_cert_serial(),
            "thumbprint_sha1": conn.client_cert_thumbprint_sha1(),
            "thumbprint_sha256": conn.client_cert_thumbprint_sha256(),
            "not_before": conn.client_cert_not_before(),
            "not_after": conn.client_cert_not_after(),
            "dns_names": conn.client_cert_dns_names(),
            "uris": conn.client_cert_uris(),
            "ip_addresses": conn.client_cert_ip_addresses(),
            "emails": conn.client_cert_emails(),
            "verified": conn.client_cert_verified(),
            "verify_error": conn.client_cert_verify_error(),
            "issuer_thumbprint_sha1": conn.client_cert_issuer_thumbprint_sha1(),
            "issuer_thumbprint_sha256": conn.client_cert_issuer_thumbprint_sha256(),
        });
        Decision::Respond(ResponseSpec {
            status: 200,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: facts.to_string().into_bytes(),
        })
    }
}

export_policy!(CertFacts);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_sdk::testkit::{self, TestConnection, TestRequest};
    use gatehouse_sdk::ClientCertificate;

    fn body(d: Decision) -> serde_json::Value {
        match d {
            Decision::Respond(r) => serde_json::from_slice(&r.body).unwrap(),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn the_declaration_is_recorded_only_when_configured() {
        testkit::reset();
        let _: CertFacts = testkit::build(r#"{}"#).unwrap();
        assert!(!testkit::declared_reads_client_certificate());
        let _: CertFacts = testkit::build(r#"{"declare": true}"#).unwrap();
        assert!(testkit::declared_reads_client_certificate());
    }

    #[test]
    fn the_testkit_serves_each_accessor_from_the_test_certificate() {
        let p: CertFacts = testkit::build(r#"{}"#).unwrap();
        let cert = ClientCertificate {
            subject: "CN=a".into(),
            issuer: "CN=ca".into(),
            common_name: Some("a".into()),
            serial: "1f".into(),
            thumbprint_sha1: "11".into(),
            thumbprint_sha256: "22".into(),
            not_before: 1,
            not_after: 2,
            dns_names: vec!["a.test".into()],
            uris: vec!["spiffe://t/a".into()],
            ip_addresses: vec![],
            emails: vec![],
            verified: false,
            verify_error: Some("untrusted".into()),
        };
        let mut conn = TestConnection {
            client_certificate: Some(cert.clone()),
            issuer_thumbprints: Some(("33".into(), "44".into())),
            ..TestConnection::default()
        };
        let f = body(testkit::on_request_with(&p, &TestRequest::get("/"), &conn));
        assert_eq!(f["subject"], "CN=a");
        assert_eq!(f["uris"], serde_json::json!(["spiffe://t/a"]));
        assert_eq!(f["verify_error"], "untrusted");
        assert_eq!(
            f["issuer_thumbprint_sha256"],
            serde_json::Value::Null,
            "unverified"
        );
        conn.client_certificate = Some(ClientCertificate {
            verified: true,
            verify_error: None,
            ..cert
        });
        let f = body(testkit::on_request_with(&p, &TestRequest::get("/"), &conn));
        assert_eq!(f["issuer_thumbprint_sha1"], "33");
        assert_eq!(f["issuer_thumbprint_sha256"], "44");
        let f = body(testkit::on_request_with(
            &p,
            &TestRequest::get("/"),
            &TestConnection::default(),
        ));
        assert_eq!(f["present"], false);
        assert_eq!(f["serial"], serde_json::Value::Null);
    }
}
