use super::*;

fn kinds(findings: &[Finding]) -> Vec<(&'static str, usize, Range<usize>)> {
    findings.iter().map(|f| (f.kind, f.segment, f.span.clone())).collect()
}

/// One sample per declared kind; `scan` must report that kind on it.
const SAMPLES: &[(&str, &str)] = &[
    ("email", "mail a@acme-mail.com"),
    ("credit_card", "card 4111 1111 1111 1111"),
    ("us_ssn", "ssn 219-09-9999"),
    ("phone", "call (415) 555-0132"),
    ("iban", "iban DE89 3704 0044 0532 0130 00"),
    ("ip_address", "server 93.184.215.14"),
    ("mac_address", "mac 0c:80:33:28:5d:47"),
    ("uk_nino", "NINO AB123456C"),
    ("date_of_birth", "DOB: 1985-03-14"),
    ("passport_number", "passport no. 912803456"),
    ("drivers_license", "driver's license D1234567"),
    ("us_bank_routing", "routing number 121000358"),
    ("crypto_wallet", "btc 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),
    ("de_tax_id", "Steuer-ID 86095742719"),
    ("fr_nir", "NIR 1 85 05 78 006 084 91"),
    ("es_dni", "DNI 12345678Z"),
    ("es_nie", "NIE X9613851N"),
    ("it_fiscal_code", "codice fiscale RSSMRA85T10A562S"),
    ("nl_bsn", "BSN 111222333"),
    ("uk_nhs", "NHS number 401 023 2137"),
    ("in_aadhaar", "Aadhaar 4001 2345 6787"),
    ("in_pan", "PAN ABBPM4567S"),
    ("ca_sin", "SIN 130 692 544"),
    ("au_tfn", "TFN 876 543 210"),
    ("au_medicare", "Medicare 2123 45670 1"),
    ("br_cpf", "CPF 529.982.247-25"),
    ("br_cnpj", "CNPJ 11.222.333/0001-81"),
    ("person", "Dear Laura Chen, thanks"),
    ("street_address", "ship to 918 Birch Lane, Madison, WI 53703"),
    ("location", "She moved from Lyon to Berlin last year."),
    ("organization", "He has worked at Siemens AG for six years."),
    ("nationality", "Our new colleague is Brazilian."),
    ("medical_record_number", "MRN 5512087"),
    ("health_plan_id", "member id XJH482913007"),
    ("aws_access_key", "AKIAQ3EGRTYU6WNOP4XZ"),
    ("github_token", "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
    ("openai_key", "sk-proj-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3"),
    ("anthropic_key", "sk-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3"),
    ("private_key", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"),
    ("aws_secret_key", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKQ"),
    ("gcp_service_account", r#""private_key_id": "0123456789abcdef0123456789abcdef01234567""#),
    ("gcp_api_key", "AIzaSyD3Ab5De7Fg9Hj1Kl3Mn5Pq7Rs9Tv1Wx3Y"),
    ("azure_storage_key", "AccountKey=aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h=="),
    ("azure_client_secret", "secret: 'abc8Q~aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3b'"),
    ("gitlab_token", "glpat-aB3dE5fG7hJ9kL1mN3pQ"),
    ("slack_token", "xoxb-123456789012-1234567890123-aB3dE5fG7hJ9kL1mN3pQ5rS7"),
    ("slack_webhook", "https://hooks.slack.com/services/T01ABCDEF12/B01ABCDEF34/aB3dE5fG7hJ9kL1mN3pQ5rS7"),
    ("stripe_key", "sk_live_51Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7"),
    ("twilio_key", "SK0123456789abcdef0123456789abcdef"),
    ("sendgrid_key", "SG.aB3dE5fG7hJ9kL1mN3pQ5r.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
    ("npm_token", "npm_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
    ("pypi_token", "pypi-AgEIcHlwaS5vcmcCJGI4YmNhMDA5LTg1NDMtNDQ3Ny1hZDZiLTQwNGJmN2Q4YmYzYwACKlsz"),
    ("huggingface_token", "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    ("database_url", "postgres://app:s3cr3t-P4ss@db.internal:5432/app"),
    ("generic_secret", "DB_PASSWORD=Zx8#kQ2@vL9p"),
    ("datadog_key", "DD_API_KEY=0123456789abcdef0123456789abcdef"),
    ("shopify_token", "shpat_0123456789abcdef0123456789abcdef"),
    ("discord_token", "discord bot MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"),
    ("telegram_bot_token", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"),
    ("mailgun_key", "key-0123456789abcdef0123456789abcdef"),
    ("square_token", "sq0csp-aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
    ("digitalocean_token", "dop_v1_a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4a1b2c3d4"),
    ("linear_key", "lin_api_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7f"),
    ("notion_token", "secret_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
    ("atlassian_token", "jira_token: aB3dE5fG7hJ9kL1mN3pQ5rS7"),
    ("heroku_key", "HRKU-AAaB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1"),
    ("postman_key", "PMAK-0123456789abcdef01234567-0123456789abcdef0123456789abcdef01"),
    ("grafana_token", "glsa_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ_0a1b2c3d"),
    ("doppler_token", "dp.pt.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
    ("databricks_token", "dapi0123456789abcdef0123456789abcdef"),
    ("dynatrace_token", "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5"),
    ("newrelic_key", "NRAK-AB3DE5FG7HJ9KL1MN3PQ5RS7TV9"),
    ("sentry_token", "sntryu_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    ("pulumi_token", "pul-0123456789abcdef0123456789abcdef01234567"),
    ("age_secret_key", "AGE-SECRET-KEY-1QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE"),
    ("vault_token", "hvs.CAESIaB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ"),
    ("terraform_token", "abcdefgh123456.atlasv1.aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9haB3dE5fG7hJ9kL1mN3pQ5r"),
    ("alibaba_key", "LTAI5tAb3De5Fg7Hj9Kl1Mn3"),
    ("flyio_token", "fo1_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5dE7fG9h"),
    ("planetscale_token", "pscale_tkn_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3bC5"),
    ("onepassword_token", "A3-ABCDEF-ABCDEFGHIJK-ABCDE-ABCDE-ABCDE"),
    (ATTACHMENT_KIND, "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"),
];

#[test]
fn every_kind_is_a_declared_type_name() {
    let d = Detectors::new();
    let mut want: Vec<&str> = PII_KINDS.iter().chain(SECRET_KINDS).chain(ENTITY_KINDS).copied().collect();
    want.push(ATTACHMENT_KIND);
    want.sort_unstable();
    let mut sampled: Vec<&str> = SAMPLES.iter().map(|s| s.0).collect();
    sampled.sort_unstable();
    assert_eq!(sampled, want, "one sample per declared kind");
    for (kind, text) in SAMPLES {
        let found = d.scan(None, &[text]);
        assert!(found.iter().any(|f| f.kind == *kind), "{kind}: {found:?}");
        for f in &found {
            assert!((0.0..=1.0).contains(&f.confidence), "{f:?}");
            let declared = match f.category {
                Category::Pii => PII_KINDS.contains(&f.kind),
                Category::Secret => SECRET_KINDS.contains(&f.kind),
                Category::Attachment => f.kind == ATTACHMENT_KIND,
                Category::Term => f.kind == TERM_KIND,
                Category::Special => SPECIAL_KINDS.contains(&f.kind),
                Category::Entity => ENTITY_KINDS.contains(&f.kind),
            };
            assert!(declared, "{f:?}");
        }
    }
    assert!(PII_KINDS.len() <= 64 && SECRET_KINDS.len() <= 64);
    assert!(SECRET_KINDS.len() >= 40);
}

#[test]
fn segments_are_indexed_and_spans_are_local() {
    let d = Detectors::new();
    let segments = ["nothing here", "write to bob@acmemail.io now", "", "key AKIAQ3EGRTYU6WNOP4XZ and ann@acmemail.io"];
    let found = d.scan(None, &segments);
    assert_eq!(kinds(&found), vec![("email", 1, 9..24), ("aws_access_key", 3, 4..24), ("email", 3, 29..44),]);
    assert_eq!(&segments[1][9..24], "bob@acmemail.io");
    assert_eq!(&segments[3][29..44], "ann@acmemail.io");
}

#[test]
fn results_are_sorted_and_include_dictionary_terms() {
    let d = Detectors::new();
    let dict = Dictionary::new(["Project Falcon"]).unwrap();
    let segments = ["ann@acmemail.io wrote about project falcon", "PROJECT FALCON ssn 219-09-9999"];
    let found = d.scan(Some(&dict), &segments);
    assert_eq!(
        kinds(&found),
        vec![("email", 0, 0..15), (TERM_KIND, 0, 28..42), (TERM_KIND, 1, 0..14), ("us_ssn", 1, 19..30),]
    );
    let term = &found[1];
    assert_eq!(term.category, Category::Term);
    assert_eq!(term.validator, "dictionary");
}

#[test]
fn keyword_gate_finds_what_an_overlapping_automaton_finds() {
    let d = Detectors::new();
    let words = d.keywords.words();
    assert!(words.iter().all(|w| w.len() >= 2 && *w == w.to_ascii_lowercase()));
    let reference = aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(words)
        .expect("keywords build an automaton");
    let mut texts: Vec<String> = SAMPLES.iter().map(|s| s.1.to_string()).collect();
    let all = texts.join(" \n");
    texts.push(all.to_ascii_uppercase());
    texts.push(all.to_ascii_lowercase());
    texts.push(all);
    for text in &texts {
        let want: Vec<(usize, usize)> =
            reference.find_overlapping_iter(text).map(|m| (m.pattern().as_usize(), m.end())).collect();
        let mut got = Vec::new();
        d.keywords.find(text.as_bytes(), &mut got);
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn clean_text_has_no_findings() {
    let d = Detectors::new();
    let text = "Upgrade regex to 1.10.2 and tokio 1.38.0; the build took 12.5s \
                on 2024-03-14 at 10:42. See issue #4521, PR 1234567 and commit \
                9f8e7d6c5b4a. Port 8080, v10.0.0.1, version 1.2.3.4, ratio 3/4, \
                version 10.123.45.6789, id 12345678901234567890.";
    assert_eq!(d.scan(None, &[text]), vec![]);
}

#[test]
fn detectors_and_dictionary_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    shareable(&Detectors::default());
    shareable(&Dictionary::new(["x"]).unwrap());
    assert!(format!("{:?}", Detectors::new()).contains("detectors: "));
}

#[test]
fn anthropic_key_is_not_also_an_openai_key() {
    let d = Detectors::new();
    let key = "sk-ant-api03-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tv9Wx1Yz3";
    let found = d.scan(None, &[&format!("ANTHROPIC_API_KEY={key}")]);
    assert_eq!(kinds(&found), vec![("anthropic_key", 0, 18..18 + key.len())]);
}

#[test]
fn card_digits_inside_an_iban_count_once() {
    let d = Detectors::new();
    // The 16 digits after the country code pass Luhn with a Visa prefix.
    let text = "GB77 4111 1111 1111 1111 00";
    let found = d.scan(None, &[text]);
    assert!(found.iter().all(|f| f.kind != "credit_card"), "{found:?}");
}

#[test]
fn nested_pii_is_dropped_but_outer_and_disjoint_kept() {
    let mk = |kind, span: Range<usize>, conf| finding(Category::Pii, kind, 0, span, conf, "pattern");
    let mut v = vec![mk("phone", 5..15, 0.7), mk("iban", 0..30, 0.9), mk("email", 40..50, 0.85)];
    drop_nested_pii(&mut v, 0);
    let got: Vec<&str> = v.iter().map(|f| f.kind).collect();
    assert_eq!(got, vec!["iban", "email"]);
}

#[test]
fn context_words_must_start_a_word() {
    let text = "my ssn: 219-09-9999";
    assert!(context_near(text, &(8..19), &["ssn"]));
    let text = "carelessness 219-09-9999";
    assert!(!context_near(text, &(13..24), &["ssn"]));
    let text = "219-09-9999 is the SSN";
    assert!(context_near(text, &(0..11), &["ssn"]));
}

#[test]
fn digit_search_matches_bytewise_search() {
    let mut text: Vec<u8> = b"no digits here, just words and \xc3\xa9 accents ".to_vec();
    assert_eq!(next_digit(&text, 0), None);
    for (i, b) in (0u8..=255).enumerate() {
        let word = u64::from_le_bytes([b'a', b'/', b':', 0xB0, 0xB9, b, b'z', 0xFF]);
        assert_eq!(has_ascii_digit(word), b.is_ascii_digit(), "byte {b:#x} ({i})");
    }
    text.extend_from_slice(b"v2");
    assert_eq!(next_digit(&text, 0), Some(text.len() - 1));
    assert_eq!(next_digit(&text, text.len()), None);
}

#[test]
fn prescan_finds_numeric_runs_and_iban_starts() {
    let text = "v1.2.3 call (415) 555-0132 or +44 20 7123 4567; IBAN DE89 3704, xDE89";
    let pre = Prescan::of(text);
    let runs: Vec<&str> = pre.numeric_runs.iter().map(|r| &text[r.span.clone()]).collect();
    assert_eq!(runs, vec!["(415) 555-0132", "+44 20 7123 4567"]);
    assert_eq!(pre.iban_starts, vec![53]);
    assert!(!pre.has_at);
}

#[test]
fn joined_numbers_are_recognised() {
    assert!(joined_to_number("1.415.555.0132", &(2..14)));
    assert!(joined_to_number("415-555-0132-9", &(0..12)));
    assert!(!joined_to_number("call 415-555-0132.", &(5..17)));
}
