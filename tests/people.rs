//! People, places and special categories end to end: the real binary, the
//! fake provider, and the shipped default policy (issue 13). Each prompt
//! below must be kept local (or, for a name alone, redacted) and never
//! reach the provider in the clear.

mod support;

use serde_json::{json, Value};

use support::fake_provider::FakeProvider;
use support::*;

/// (prompt, route, rule) under the shipped default policy. `local` answers
/// 503 here (no local model in tests), but it is routed local: the
/// provider never sees it.
const CASES: &[(&str, &str, &str)] = &[
    // The examples of issue 13.
    (
        "Patient Laura Chen, 57, stage 2 breast cancer, on tamoxifen. Draft a note to her oncologist.",
        "local",
        "special-categories-stay-local",
    ),
    (
        "Summarize the discharge summary for MRN 5512087: admitted with sepsis, treated with IV antibiotics.",
        "local",
        "regulated-pii-stays-local",
    ),
    ("Ship the laptop to Daniel Fischer, 918 Birch Lane, Unit 12, Madison, WI 53703.", "local", "addresses-stay-local"),
    (
        "Which of these two should we promote: Nadia Rahman (on medical leave for burnout) or Chris Walker?",
        "local",
        "special-categories-stay-local",
    ),
    // Addresses in German, French and Spanish.
    ("Bitte schicke die Unterlagen an Jonas Becker, Lindenstraße 12, 10115 Berlin.", "local", "addresses-stay-local"),
    ("Envoyez la facture à Camille Martin, 14 rue de la République, 69002 Lyon.", "local", "addresses-stay-local"),
    ("Envía el contrato a Lucía Fernández, Calle de Alcalá 45, 28014 Madrid.", "local", "addresses-stay-local"),
    // Other special categories, about someone.
    (
        "Our employee Omar Haddad asked for a prayer room during Ramadan; draft a reply.",
        "local",
        "special-categories-stay-local",
    ),
    (
        "Mein Kollege Stefan Wolf ist Mitglied der Gewerkschaft und fragt nach dem Streikrecht.",
        "local",
        "special-categories-stay-local",
    ),
    ("My 12-year-old daughter needs a note for school, please write one.", "local", "special-categories-stay-local"),
    ("Ma collègue Sophie est enceinte, comment adapter son poste ?", "local", "special-categories-stay-local"),
    ("Mi empleado Javier Ortega tiene diabetes, ¿qué pausas necesita?", "local", "special-categories-stay-local"),
    (
        "Write a supportive note to my teammate, who told me he is gay and worried about the offsite.",
        "local",
        "special-categories-stay-local",
    ),
    (
        "Our applicant Kwame Mensah is Ghanaian and Black; does the form need his ethnicity?",
        "local",
        "special-categories-stay-local",
    ),
    (
        "Employee Julia Novak is a member of the Green Party and wants leave for the campaign.",
        "local",
        "special-categories-stay-local",
    ),
    ("Enrol the face scan of our employee Marco Rossi in the access system.", "local", "special-categories-stay-local"),
    // The surname alone read as a place: the first name before it makes it a person.
    ("Store the fingerprint of Marco Rossi for the door access system.", "local", "special-categories-stay-local"),
    ("Reminder: Pierre Dubois has a dentist appointment.", "local", "special-categories-stay-local"),
    // Health-plan ids with their naming word.
    ("Claim for member id XJH482913007: patient Tom Baker, knee surgery.", "local", "regulated-pii-stays-local"),
    // National identifiers, each valid under its checksum (issue 13).
    ("NIE X9613851N del nuevo empleado, rellena el alta.", "local", "regulated-pii-stays-local"),
    ("PAN ABBPM4567S for the vendor payment.", "local", "regulated-pii-stays-local"),
    ("CNPJ 11.222.333/0001-81 do fornecedor, emita a nota.", "local", "regulated-pii-stays-local"),
    ("Medicare 2123 45670 1 for the claim.", "local", "regulated-pii-stays-local"),
    ("Renew passport no. 912803456 of Jane Doe.", "local", "regulated-pii-stays-local"),
    ("Check the tax record for Steuer-ID 86095742719 before filing.", "local", "regulated-pii-stays-local"),
    ("El cliente tiene DNI 12345678Z, prepara el contrato.", "local", "regulated-pii-stays-local"),
    ("Verify Aadhaar 2341 2341 2346 for the vendor onboarding.", "local", "regulated-pii-stays-local"),
    ("Update the CPF 111.444.777-35 in the customer file.", "local", "regulated-pii-stays-local"),
    ("Her SIN is 130 692 544, file the T4 for her.", "local", "regulated-pii-stays-local"),
    ("The NHS number 943 476 5919 belongs to the new patient.", "local", "regulated-pii-stays-local"),
    ("Codice fiscale RSSMRA85T10A562S per il contratto.", "local", "regulated-pii-stays-local"),
    ("Le NIR du salarié est 1 85 05 78 006 084 91.", "local", "regulated-pii-stays-local"),
    ("BSN 111222333 van de nieuwe medewerker.", "local", "regulated-pii-stays-local"),
    ("Client TFN 123 456 782 for the return.", "local", "regulated-pii-stays-local"),
    // A name alone is replaced before the prompt goes out.
    ("Write a thank-you note to Maria Gonzalez for organising the offsite.", "redact", "other-pii-redacted"),
];

async fn route_of(proc: &SluiceProc, prompt: &str) -> (u16, String, String) {
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": prompt }] });
    let resp = reqwest::Client::new().post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (route, rule) = (header("x-sluice-route"), header("x-sluice-rule"));
    (resp.status().as_u16(), route, rule)
}

#[tokio::test]
async fn people_places_and_special_categories_stay_home() {
    let fake = FakeProvider::start().await;
    let proc = SluiceProc::start(&fake, Setup::default()).await;
    for (prompt, want_route, want_rule) in CASES {
        let (_, route, rule) = route_of(&proc, prompt).await;
        assert_eq!((route.as_str(), rule.as_str()), (*want_route, *want_rule), "{prompt}");
    }
    // Only the redacted prompt reached the provider, without the name.
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    let body = String::from_utf8_lossy(&seen[0].body);
    assert!(!body.contains("Maria Gonzalez") && body.contains("<PERSON_1>"), "{body}");
}

#[tokio::test]
async fn general_questions_on_sensitive_topics_still_go_out() {
    let fake = FakeProvider::start().await;
    let proc = SluiceProc::start(&fake, Setup::default()).await;
    for prompt in [
        "What is the usual dosage of ibuprofen for adults?",
        "Explain how trade unions negotiate collective agreements.",
        "Bump the minor version and fix the race condition in the scheduler.",
    ] {
        let (status, route, _) = route_of(&proc, prompt).await;
        assert_eq!((status, route.as_str()), (200, "cloud"), "{prompt}");
    }
}

/// Places, companies and nationalities alone identify no one: such prompts
/// go out untouched. Beside a name they are replaced with it.
#[tokio::test]
async fn places_and_companies_alone_go_out_and_are_redacted_beside_a_name() {
    let fake = FakeProvider::start().await;
    let proc = SluiceProc::start(&fake, Setup::default()).await;
    let plain = [
        "What is the capital of France?",
        "Plan a three-day trip to Lisbon and Porto for a Canadian family.",
        "Compare the cloud offers of Microsoft and Google for a startup in Berlin.",
    ];
    for prompt in plain {
        // Routed by the task rules or the default, never by a finding.
        let (status, route, rule) = route_of(&proc, prompt).await;
        assert_eq!((status, route.as_str()), (200, "cloud"), "{prompt}");
        assert!(["default", "hard-tasks-to-cloud"].contains(&rule.as_str()), "{prompt}: {rule}");
    }
    let prompt = "Write a thank-you note to Maria Gonzalez for organising the offsite in Lisbon.";
    let (status, route, rule) = route_of(&proc, prompt).await;
    assert_eq!((status, route.as_str(), rule.as_str()), (200, "redact", "other-pii-redacted"));
    let seen = fake.requests();
    assert_eq!(seen.len(), plain.len() + 1);
    for (request, prompt) in seen.iter().zip(plain) {
        let body = String::from_utf8_lossy(&request.body);
        assert!(body.contains(prompt), "sent as written: {body}");
    }
    let body = String::from_utf8_lossy(&seen[plain.len()].body);
    assert!(!body.contains("Maria Gonzalez") && !body.contains("Lisbon"), "{body}");
    assert!(body.contains("<PERSON_1>") && body.contains("<LOCATION_1>"), "{body}");
}

#[test]
fn policy_test_names_the_people_and_special_category_signals() {
    let out = std::process::Command::new(sluice_bin())
        .args(["policy", "test", "--team", "default", "--json", "--dir"])
        .arg(repo_policies())
        .args(["--prompt", CASES[0].0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "local");
    assert_eq!(v["rule"], "special-categories-stay-local");
    assert!(v["signals"]["because"].to_string().contains("special_category: health"), "{v}");
    let text = v.to_string();
    assert!(!text.contains("Laura") && !text.contains("tamoxifen"), "values never appear: {text}");
    // Named places are findings of their own category, by kind only.
    let out = std::process::Command::new(sluice_bin())
        .args(["policy", "test", "--team", "default", "--json", "--dir"])
        .arg(repo_policies())
        .args(["--prompt", "What is the capital of France?"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["decision"].as_str(), v["rule"].as_str()), (Some("cloud"), Some("default")), "{v}");
    let findings = v["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f["type"] == "location" && f["category"] == "entity"), "{v}");
    assert!(!v.to_string().contains("France"), "values never appear: {v}");
}
