"""A labelled corpus shaped like what agents really get back: code, configs, shell sessions, logs, chats, docs.

Labelling rules
---------------
- A *positive* record names the values that identify a person or open a door: a real-looking
  address, number or credential that someone could use. Each value must be removed by ONE
  redacted span covering all of it (a masked `-----BEGIN` with the key body left is a miss;
  a value cut in two by two hits is a miss). Which detector finds it does not matter.
- `kind` is the class the value belongs to (a detector name); `fmt` is where it sits:
  prose, json, yaml, env, shell, code, log; `obfuscated` marks values written with
  zero-width characters, soft hyphens, fullwidth forms, no-break spaces, dots or bidi controls.
- A *clean* record must come back unchanged, character for character. Clean means no value
  that identifies anyone or opens anything: placeholders and masked examples (`x`, `*`, `•`,
  `your_...`, `<...>`, `${...}`, `...`), environment and config references (`os.environ[...]`),
  loopback, unspecified and documentation addresses (RFC 5737, RFC 3849), version and section
  numbers, reserved example domains (RFC 2606: example.com/.org/.net, *.example, *.test,
  *.invalid, *.localhost) and `name@domain.tld` templates, `git@host:org/repo` remotes, part and
  order numbers, hashes, UUIDs, timestamps.
- Published test card numbers (4111 1111 1111 1111...) are sensitive by default. A clean record
  may carry `thresholds`, the policy under which it is clean: docs quoting test cards are clean
  when the policy raises `credit_card` to 0.7.
- Private ranges (10/8, 172.16/12, 192.168/16) are positives: they map someone's network.

Values are generated from a fixed seed, so the corpus is the same on every run, and no
credential literal sits in the repository for secret scanners to flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.data.realistic_clean import Clean, clean_texts
from tests.data.realistic_values import (
    anthropic_keys,
    aws_ids,
    aws_secrets,
    cards,
    emails,
    github_tokens,
    grouped_card,
    ibans,
    ipv4s,
    ipv6s,
    jwts,
    openai_keys,
    passwords,
    phones,
    slack_tokens,
    spaced,
    ssns,
    stripe_keys,
)  # fmt: skip
from tests.data.redaction_corpus import ENCRYPTED_PEM, OPENSSH_PEM, PKCS8_PEM, RSA_PEM


@dataclass(frozen=True)
class Record:
    kind: str
    fmt: str
    text: str
    values: tuple[str, ...]
    obfuscated: bool = False


# ---- positives ---------------------------------------------------------------------------------------------------


def _records() -> list[Record]:
    out: list[Record] = []

    def add(kind: str, fmt: str, text: str, *values: str, obfuscated: bool = False) -> None:
        out.append(Record(kind, fmt, text, values, obfuscated))

    for i, e in enumerate(emails(30)):
        t = [
            ("prose", f"Sure, I've added {e} to the on-call rota."),
            ("prose", f"You can reach the account owner at {e} if the invoice bounces."),
            ("json", json.dumps({"customer": {"name": "M. Rossi", "email": e, "tier": "gold"}})),
            ("yaml", f"owners:\n  - name: Dana\n    email: {e}\n"),
            ("env", f"ALERT_EMAIL={e}\nSMTP_PORT=587\n"),
            ("shell", f"$ git config user.email \"{e}\"\n$ git commit -m 'fix'"),
            ("code", f'send_mail(to="{e}", subject="Your receipt")'),
            ("log", f"2024-05-02T10:11:12Z INFO delivered message to <{e}> in 231ms"),
        ][i % 8]
        add("email", t[0], t[1], e)

    for i, p in enumerate(phones(25)):
        t = [
            ("prose", f"The customer asked us to call back on {p} after 5pm."),
            ("json", json.dumps({"contact": {"phone": p}})),
            ("yaml", f'support:\n  phone: "{p}"\n'),
            ("code", f'customer = Customer(name="Ito", phone="{p}")'),
            ("log", f"INFO sms sent to {p} status=delivered"),
        ][i % 5]
        add("phone", t[0], t[1], p)

    for i, s in enumerate(ssns(24)):
        bare = s.replace("-", "")
        t = [
            ("prose", f"Her SSN is {s}, please verify before the transfer.", s),
            ("prose", f"SSN: {bare}", bare),
            ("json", json.dumps({"employee": "R. Chen", "ssn": bare}), bare),
            ("yaml", f"applicant:\n  ssn: {s}\n", s),
            ("code", f'applicant = {{"name": "Ana", "social_security_number": "{bare}"}}', bare),
            ("prose", f"Social Security number {bare} was flagged by the bank.", bare),
            ("log", f"WARN kyc mismatch ssn={bare} dob=1985-03-02", bare),
            ("env", f"TEST_APPLICANT_SSN={s}", s),
        ][i % 8]
        add("ssn", t[0], t[1], t[2])

    for i, c in enumerate(cards(30)):
        sep = [" ", "-", "", " ", "-"][i % 5]
        shown = grouped_card(c, sep) if sep else c
        t = [
            ("prose", f"The card ending in {c[-4:]} is {shown}, exp 09/27."),
            ("json", json.dumps({"payment": {"card_number": shown, "exp": "11/26"}})),
            ("yaml", f"billing:\n  card: {shown}\n"),
            ("code", f'charge(card="{shown}", amount=1999)'),
            ("log", f"ERROR declined pan={shown} reason=insufficient_funds"),
            ("shell", f"$ ./pay --card {shown} --cvv 123"),
        ][i % 6]
        add("credit_card", t[0], t[1], shown)

    for i, b in enumerate(ibans(18)):
        shown = spaced(b) if i % 2 else b
        t = [
            ("prose", f"Please wire the refund to {shown} by Friday."),
            ("json", json.dumps({"payout": {"iban": shown, "bic": "DEUTDEFF"}})),
            ("yaml", f"payee:\n  iban: {shown}\n"),
        ][i % 3]
        add("iban", t[0], t[1], shown)

    for i, ip in enumerate(ipv4s(24)):
        t = [
            ("prose", f"The database host is {ip}, port 5432."),
            ("yaml", f"db:\n  host: {ip}\n  port: 5432\n"),
            ("env", f"REDIS_HOST={ip}\n"),
            ("shell", f"$ ssh deploy@{ip} -p 2222"),
            ("log", f'{ip} - - [02/May/2024:10:11:12 +0000] "GET /health HTTP/1.1" 200 2'),
            ("json", json.dumps({"peer": ip, "rtt_ms": 12})),
        ][i % 6]
        add("ipv4", t[0], t[1], ip)

    for i, ip in enumerate(ipv6s(12)):
        t = [
            ("prose", f"The node answers on {ip} only."),
            ("log", f"accepted connection from [{ip}]:51812"),
            ("yaml", f'bind: "{ip}"\n'),
        ][i % 3]
        add("ipv6", t[0], t[1], ip)

    secret_kinds = [
        ("openai_key", openai_keys(12), "OPENAI_API_KEY", "api_key"),
        ("anthropic_key", anthropic_keys(10), "ANTHROPIC_API_KEY", "api_key"),
        ("aws_access_key", aws_ids(10), "AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("github_token", github_tokens(12), "GITHUB_TOKEN", "token"),
        ("slack_token", slack_tokens(10), "SLACK_BOT_TOKEN", "token"),
        ("stripe_key", stripe_keys(10), "STRIPE_SECRET_KEY", "api_key"),
        ("jwt", jwts(10), "ID_TOKEN", "id_token"),
    ]
    for kind, values, env, arg in secret_kinds:
        for i, v in enumerate(values):
            t = [
                ("prose", f"Here is the key you asked for: {v} - rotate it after the demo."),
                ("json", json.dumps({"credentials": {arg: v}, "region": "eu-west-1"})),
                ("yaml", f"service:\n  {arg}: {v}\n  timeout: 30\n"),
                ("env", f"{env}={v}\nLOG_LEVEL=info\n"),
                ("shell", f'$ curl -H "Authorization: Bearer {v}" https://api.internal.acmecorp.io/v1/items'),
                ("code", f'client = Client({arg}="{v}", retries=3)'),
            ][i % 6]
            add(kind, t[0], t[1], v)

    for i, v in enumerate(aws_secrets(10)):
        t = [
            ("env", f"AWS_SECRET_ACCESS_KEY={v}\n"),
            ("yaml", f"aws:\n  secret_access_key: {v}\n"),
            ("code", f's3 = boto3.client("s3", aws_secret_access_key="{v}")'),
            ("json", json.dumps({"SecretAccessKey": v, "AccessKeyId": "see vault"})),
            ("prose", f"Your secret access key is {v}; it is shown only once."),
        ][i % 5]
        add("aws_secret_key", t[0], t[1], v)

    pems = [RSA_PEM, PKCS8_PEM, OPENSSH_PEM, ENCRYPTED_PEM]
    for i in range(16):
        pem = pems[i % 4]
        escaped = pem.replace("\n", "\\n")
        t = [
            ("prose", f"Here is the deploy key:\n{pem}\nAdd it to the CI secrets.", pem),
            ("json", '{"type": "service_account", "private_key": "' + escaped + '", "client_email": "svc"}', escaped),
            ("env", f'JWT_PRIVATE_KEY="{escaped}"\n', escaped),
            ("yaml", f'tls:\n  key: "{escaped}"\n', escaped),
            ("yaml", "tls:\n  key: |\n    " + pem.replace("\n", "\n    ") + "\n", pem.replace("\n", "\n    ")),
            ("code", f'SIGNING_KEY = """{pem}"""', pem),
            ("json", json.dumps({"private_key": pem}), json.dumps(pem)[1:-1]),
            ("shell", f"$ cat ~/.ssh/id_ed25519\n{pem}\n$ ", pem),
        ][i % 8]
        add("private_key", t[0], t[1], t[2])

    pw = passwords(60)
    users = ["admin", "deploy", "svc_app", "root", "jenkins"]
    templates = [
        ("prose", "Your temporary password is {p} - you'll be asked to change it at first login."),
        ("prose", "I reset it; the new password is {p}."),
        ("prose", "Log in with user `{u}` and password `{p}`."),
        ("prose", 'The Wi-Fi passphrase is "{p}".'),
        ("env", "DB_PASSWORD={p}\n"),
        ("env", 'POSTGRES_PASSWORD="{p}"\n'),
        ("yaml", "database:\n  user: {u}\n  password: {p}\n"),
        ("yaml", 'smtp:\n  password: "{p}"\n'),
        ("json", '{{"username": "{u}", "password": "{p}"}}'),
        ("shell", "$ curl -u {u}:{p} https://ci.acmecorp.io/api/json"),
        ("shell", "$ redis-cli -h cache.internal -a {p} ping"),
        ("shell", "$ mysql -u {u} -p{p} -h db.internal shop"),
        ("shell", "$ psql postgresql://{u}:{p}@db.internal:5432/app"),
        ("code", 'requests.get(url, auth=("{u}", "{p}"))'),
        ("code", 'engine = create_engine("mysql+pymysql://{u}:{p}@db.internal/shop")'),
        ("env", "DATABASE_URL=postgres://{u}:{p}@db.internal:5432/app\n"),
        ("code", 'conn = psycopg2.connect(host="db", user="{u}", password="{p}")'),
        ("shell", "$ docker login -u {u} -p {p} registry.acmecorp.io"),
        ("prose", "Use password: {p} for the staging admin."),
        ("yaml", "redis:\n  url: redis://:{p}@cache.internal:6379/0\n"),
    ]
    for i, p in enumerate(pw):
        fmt, template = templates[i % len(templates)]
        add("password", fmt, template.format(p=p, u=users[i % len(users)]), p)

    # Obfuscated: invisible or look-alike characters inside the value.
    for i, e in enumerate(emails(12)):
        local, domain = e.split("@")
        variants = [
            local + "\u200b@" + domain,
            local + "@\u00ad" + domain,
            local + "\uff20" + domain,
            local[:3] + "\u202e" + local[3:] + "@" + domain,
            local[:2] + "\u2060" + local[2:] + "@" + domain,
            local + "@" + domain.replace(".", "\uff0e", 1),
        ]
        v = variants[i % len(variants)]
        add("email", "prose", f"Write to {v} for access.", v, obfuscated=True)
    for i, c in enumerate(cards(14)):
        variants = [
            grouped_card(c, "\u00a0"),
            grouped_card(c, "."),
            grouped_card(c, " ").replace(" ", "\u200b ", 1),
            "".join(chr(0xFF10 + int(d)) for d in c),
            grouped_card(c, "\u202f"),
            c[:6] + "\u00ad" + c[6:],
            grouped_card(c, "\u2009"),
        ]
        v = variants[i % len(variants)]
        add("credit_card", "prose", f"Card on file: {v} (exp 02/28).", v, obfuscated=True)
    for p in phones(6):
        v = p.replace(" ", "\u00a0")
        add("phone", "prose", f"Call {v} tomorrow.", v, obfuscated=True)
    for s in ssns(4):
        v = s.replace("-", "\u2011")
        add("ssn", "prose", f"SSN {v} on the form.", v, obfuscated=True)
    out.extend(_second_batch())
    return out


def _second_batch() -> list[Record]:
    """Written after the detectors were tuned on the records above, to check that they generalise."""
    e, p, pw, c = emails(8), phones(6), passwords(12), cards(6)
    ip, gh, aws_id, aws_secret = ipv4s(4), github_tokens(2), aws_ids(2), aws_secrets(2)
    pem = RSA_PEM
    items = [
        ("email", "prose", f"| Name | Email |\n|---|---|\n| Ana | {e[0]} |", e[0]),
        ("email", "log", f'From: "Li Wei" <{e[1]}>\nTo: support', e[1]),
        ("email", "code", f"users.csv:\nid,name,email\n17,Olu,{e[2]}\n", e[2]),
        ("email", "json", f'{{"to": ["{e[3]}", "{e[4]}"]}}', e[3]),
        ("email", "prose", f"Please cc {e[5].upper()} as well.", e[5].upper()),
        ("email", "yaml", f"maintainers: [{e[6]}]", e[6]),
        ("phone", "prose", "Reach me on +33 6 12 34 56 78 or by mail.", "+33 6 12 34 56 78"),
        ("phone", "code", f'<a href="tel:{p[0].replace(" ", "")}">call</a>', p[0].replace(" ", "")),
        ("phone", "prose", f"Her mobile is {p[2]}.", p[2]),
        ("phone", "json", f'{{"mobile": "{p[1]}"}}', p[1]),
        ("ssn", "prose", "ss#: 219099999 (verified)", "219099999"),
        ("ssn", "yaml", "ssn: '078-05-1120'", "078-05-1120"),
        ("ssn", "prose", "SSN 536 22 1234 belongs to the claimant.", "536 22 1234"),
        ("credit_card", "json", f'{{"pan": {c[0]}}}', c[0]),
        ("credit_card", "prose", f"card: {grouped_card(c[1], '-')}", grouped_card(c[1], "-")),
        ("credit_card", "code", f"CARD = '{c[2]}'", c[2]),
        ("credit_card", "log", f"txn ok card={grouped_card(c[3], ' ')} amount=12.00", grouped_card(c[3], " ")),
        ("password", "env", f"PGPASSWORD={pw[0]} psql -h db -U app", pw[0]),
        ("password", "shell", f"$ docker run -e MYSQL_ROOT_PASSWORD={pw[1]} mysql:8", pw[1]),
        ("password", "shell", f"$ mysql --password={pw[2]} -u root", pw[2]),
        ("password", "prose", f"The root password is {pw[3]}, please change it.", pw[3]),
        ("password", "prose", f"sudo password: {pw[4]}", pw[4]),
        ("password", "yaml", f"spring:\n  datasource:\n    password: '{pw[5]}'", pw[5]),
        ("password", "code", f"DATABASES = {{'default': {{'USER': 'app', 'PASSWORD': '{pw[6]}'}}}}", pw[6]),
        ("password", "shell", f"$ git clone https://oauth2:{pw[7]}@gitlab.acmecorp.io/team/app.git", pw[7]),
        ("password", "json", f'{{"db": {{"user": "app", "pass": "{pw[8]}"}}}}', pw[8]),
        ("password", "prose", f"Credentials: admin / {pw[9]}", pw[9]),
        ("password", "env", f"SMTP_PASS={pw[10]}", pw[10]),
        ("password", "code", f'login("admin", password="{pw[11]}")', pw[11]),
        ("github_token", "shell", f"$ git remote set-url origin https://{gh[0]}@github.com/o/r.git", gh[0]),
        ("github_token", "prose", f"Authorization: token {gh[1]}", gh[1]),
        ("aws_access_key", "env", f"[default]\naws_access_key_id = {aws_id[0]}\n", aws_id[0]),
        ("aws_secret_key", "env", f"[default]\naws_secret_access_key = {aws_secret[0]}\n", aws_secret[0]),
        ("aws_secret_key", "shell", f"$ export AWS_SECRET_ACCESS_KEY='{aws_secret[1]}'", aws_secret[1]),
        ("private_key", "prose", f"```pem\n{pem}\n```", pem),
        (
            "private_key",
            "json",
            json.dumps({"key": pem.replace("\n", "\r\n")}),
            json.dumps(pem.replace("\n", "\r\n"))[1:-1],
        ),
        ("ipv4", "log", f"X-Forwarded-For: {ip[3]}", ip[3]),
        ("ipv4", "shell", f"$ ssh -i key.pem ubuntu@{ip[0]}", ip[0]),
        ("ipv4", "prose", f"Accepted password for deploy from {ip[1]} port 51812 ssh2", ip[1]),
    ]
    return [Record(kind, fmt, text, (value,)) for kind, fmt, text, value in items]


RECORDS: list[Record] = _records()
CLEAN: list[Clean] = clean_texts()
