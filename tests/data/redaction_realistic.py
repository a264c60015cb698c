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

import base64
import json
import random
import string
from dataclasses import dataclass, field

from tests.data.redaction_corpus import ENCRYPTED_PEM, OPENSSH_PEM, PKCS8_PEM, RSA_PEM

_rng = random.Random(16)
ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Record:
    kind: str
    fmt: str
    text: str
    values: tuple[str, ...]
    obfuscated: bool = False


@dataclass(frozen=True)
class Clean:
    category: str
    text: str
    thresholds: dict[str, float] = field(default_factory=dict)


def _token(n: int, alphabet: str = ALNUM) -> str:
    while True:
        value = "".join(_rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
            return value


def _luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(_rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            v = int(ch) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return digits
    raise AssertionError


def _iban(country: str, bban_len: int) -> str:
    bban = "".join(_rng.choice(string.digits) for _ in range(bban_len))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def _spaced(value: str, sep: str = " ") -> str:
    return sep.join(value[i : i + 4] for i in range(0, len(value), 4))


def _grouped_card(digits: str, sep: str) -> str:
    if len(digits) == 15:
        return sep.join((digits[:4], digits[4:10], digits[10:]))
    return _spaced(digits, sep)


# ---- values ------------------------------------------------------------------------------------------------------

FIRST = ["maria", "li.wei", "j.okafor", "anna-lena", "raj.patel", "sofia_m", "tom.becker", "nadia", "k.tanaka", "olu"]
DOMAINS = ["acmecorp.io", "northwind.de", "mail.globex.com", "uni-hamburg.de", "fastmail.fm", "initech.co.uk"]


def emails(n: int) -> list[str]:
    return [f"{_rng.choice(FIRST)}{_rng.randint(1, 99)}@{_rng.choice(DOMAINS)}" for _ in range(n)]


def phones(n: int) -> list[str]:
    out = []
    for i in range(n):
        area, exch, line = _rng.randint(201, 989), _rng.randint(200, 989), _rng.randint(1000, 9999)
        shape = i % 5
        out.append(
            [
                f"+1 {area} {exch} {line}",
                f"({area}) {exch}-{line}",
                f"{area}-{exch}-{line}",
                f"+44 20 {_rng.randint(7000, 8999)} {line}",
                f"+49 30 {_rng.randint(100000, 999999)}",
            ][shape]
        )
    return out


def ssns(n: int) -> list[str]:
    out = []
    while len(out) < n:
        area = _rng.randint(1, 899)
        if area == 666:
            continue
        out.append(f"{area:03d}-{_rng.randint(1, 99):02d}-{_rng.randint(1, 9999):04d}")
    return out


def cards(n: int) -> list[str]:
    prefixes = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("6011", 16), ("34", 15)]
    out = []
    for i in range(n):
        prefix, length = prefixes[i % len(prefixes)]
        out.append(_luhn_complete(prefix, length))
    return out


def ibans(n: int) -> list[str]:
    shapes = [("DE", 18), ("FR", 23), ("NL", 14), ("ES", 20), ("IT", 23), ("CH", 17)]
    out = []
    for i in range(n):
        country, length = shapes[i % len(shapes)]
        if country == "NL":
            bban = "ABNA" + "".join(_rng.choice(string.digits) for _ in range(10))
            numeric = "".join(str(int(c, 36)) for c in bban + "NL00")
            out.append(f"NL{98 - int(numeric) % 97:02d}{bban}")
        elif country == "IT":
            bban = "X" + "".join(_rng.choice(string.digits) for _ in range(22))
            numeric = "".join(str(int(c, 36)) for c in bban + "IT00")
            out.append(f"IT{98 - int(numeric) % 97:02d}{bban}")
        else:
            out.append(_iban(country, length))
    return out


def ipv4s(n: int) -> list[str]:
    out = []
    for i in range(n):
        shape = i % 4
        if shape == 0:
            out.append(f"10.{_rng.randint(0, 255)}.{_rng.randint(0, 255)}.{_rng.randint(1, 254)}")
        elif shape == 1:
            out.append(f"192.168.{_rng.randint(0, 255)}.{_rng.randint(1, 254)}")
        elif shape == 2:
            out.append(f"172.{_rng.randint(16, 31)}.{_rng.randint(0, 255)}.{_rng.randint(1, 254)}")
        else:
            first = _rng.choice([34, 52, 81, 95, 145, 185])
            out.append(f"{first}.{_rng.randint(1, 255)}.{_rng.randint(0, 255)}.{_rng.randint(1, 254)}")
    return out


def ipv6s(n: int) -> list[str]:
    out = []
    for i in range(n):
        groups = [f"{_rng.randint(1, 0xFFFF):x}" for _ in range(4)]
        out.append(
            [
                f"2a00:1450:{groups[0]}:{groups[1]}::{groups[2]}",
                f"fe80::{groups[0]}:{groups[1]}:{groups[2]}:{groups[3]}",
                f"2606:4700:{groups[0]}::{groups[1]}",
            ][i % 3]
        )
    return out


def openai_keys(n: int) -> list[str]:
    return ["sk-" + ("proj-" if i % 2 else "") + _token(48, ALNUM + "_-") for i in range(n)]


def anthropic_keys(n: int) -> list[str]:
    return ["sk-" + "ant-api03-" + _token(80, ALNUM + "_-") + "AA" for _ in range(n)]


def aws_ids(n: int) -> list[str]:
    return [_rng.choice(["AKIA", "ASIA"]) + _token(16, string.ascii_uppercase + "234567") for _ in range(n)]


def aws_secrets(n: int) -> list[str]:
    return [_token(40, ALNUM + "/+") for _ in range(n)]


def github_tokens(n: int) -> list[str]:
    return ["gh" + _rng.choice("pousr") + "_" + _token(36) for _ in range(n)]


def slack_tokens(n: int) -> list[str]:
    return [
        "xox"
        + _rng.choice("bp")
        + f"-{_rng.randint(10**11, 10**12 - 1)}-{_rng.randint(10**12, 10**13 - 1)}-{_token(24)}"
        for _ in range(n)
    ]


def stripe_keys(n: int) -> list[str]:
    return [_rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + _token(32) for _ in range(n)]


def jwts(n: int) -> list[str]:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    out = []
    for _ in range(n):
        head = b64(json.dumps({"alg": _rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
        body = b64(json.dumps({"sub": _token(10), "exp": _rng.randint(1700000000, 1900000000)}).encode())
        out.append(f"{head}.{body}.{b64(_rng.randbytes(32))}")
    return out


def passwords(n: int) -> list[str]:
    out = []
    for _ in range(n):
        out.append(_token(_rng.randint(10, 16), ALNUM) + _rng.choice(["!", "#", "%", "_", "9", ""]))
    return out


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
        shown = _grouped_card(c, sep) if sep else c
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
        shown = _spaced(b) if i % 2 else b
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
            _grouped_card(c, "\u00a0"),
            _grouped_card(c, "."),
            _grouped_card(c, " ").replace(" ", "\u200b ", 1),
            "".join(chr(0xFF10 + int(d)) for d in c),
            _grouped_card(c, "\u202f"),
            c[:6] + "\u00ad" + c[6:],
            _grouped_card(c, "\u2009"),
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
        ("credit_card", "prose", f"card: {_grouped_card(c[1], '-')}", _grouped_card(c[1], "-")),
        ("credit_card", "code", f"CARD = '{c[2]}'", c[2]),
        ("credit_card", "log", f"txn ok card={_grouped_card(c[3], ' ')} amount=12.00", _grouped_card(c[3], " ")),
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


# ---- clean texts that look dangerous ----------------------------------------------------------------------------

_CLEAN_TEXTS: dict[str, list[str]] = {
    "env-reference": [
        'password = os.environ["DB_PASSWORD"]',
        "password = os.environ.get('DB_PASSWORD')",
        'api_key = os.getenv("OPENAI_API_KEY")',
        "const token = process.env.GITHUB_TOKEN;",
        "const apiKey = process.env['STRIPE_SECRET_KEY'];",
        'secret = ENV.fetch("SECRET_KEY_BASE")',
        'String password = System.getenv("DB_PASSWORD");',
        'password := os.Getenv("DB_PASSWORD")',
        "password: ${DB_PASSWORD}",
        "token: ${{ secrets.GITHUB_TOKEN }}",
        "api_key: {{ .Values.apiKey }}",
        "POSTGRES_PASSWORD=${POSTGRES_PASSWORD:?must be set}",
        "password=$(cat /run/secrets/db_password)",
        "export API_KEY=$(vault kv get -field=key secret/app)",
        "password = settings.DATABASE_PASSWORD",
        "client_secret = config['oauth']['client_secret']",
        "token = request.headers.get('Authorization')",
        "self.password = password",
        "password = getpass.getpass()",
        'let secret = std::env::var("APP_SECRET")?;',
        "password: !vault |",
        "password = keyring.get_password('app', user)",
        "token = credentials.token",
        "api_key=st.secrets['api_key']",
        "export AWS_SECRET_ACCESS_KEY=$AWS_SECRET",
        "password: secretKeyRef",
        '$env:API_KEY = Read-Host "API key"',
        "password = self.vault.read(path)['data']['password']",
        "secret_key = get_secret('django-key')",
        "password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())",
    ],
    "placeholder": [
        "GITHUB_TOKEN=ghp_************************************",
        "Set OPENAI_API_KEY=sk-... in your shell first.",
        "export OPENAI_API_KEY=YOUR_API_KEY",
        "ANTHROPIC_API_KEY=sk-ant-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "SLACK_BOT_TOKEN=xoxb-your-bot-token",
        "stripe.api_key = 'sk_live_••••••••••••••••'",
        "aws_access_key_id = AKIAXXXXXXXXXXXXXXXX",
        "password: <your-password>",
        "api_key: <YOUR_API_KEY>",
        'token = "<token>"',
        "DB_PASSWORD=changeme",
        'password: "********"',
        "Authorization: Bearer <token>",
        "Authorization: Bearer $TOKEN",
        'curl -H "Authorization: Bearer ${API_TOKEN}" https://api.example.com',
        "client_secret: your-client-secret",
        "secret_key = 'your_secret_key_here'",
        "OPENAI_API_KEY=sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "The key looks like sk-ant-api03-... and is about 100 characters long.",
        "Stripe keys start with sk_live_ or sk_test_.",
        "A GitHub token starts with ghp_ followed by 36 characters.",
        "password=REPLACE_ME",
        'api_key = "YOUR-KEY-HERE"',
        "token: xxxx-xxxx-xxxx-xxxx",
        "AWS_SECRET_ACCESS_KEY=<secret>",
        "password: '{{ db_password }}'",
        "STRIPE_SECRET_KEY=sk_test_XXXXXXXXXXXXXXXXXXXXXXXX",
        "aws_secret_access_key = ****************************************",
        "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "x-api-key: sk-ant-•••••••••••••",
        "password: example-password",
        'password = "password"',
        "token: dummy-token",
        "api_key: test",
        "passwd: ...",
        "secret: redacted",
        'private_key: "-----BEGIN PRIVATE KEY-----\\n...\\n-----END PRIVATE KEY-----\\n"',
        "-----BEGIN RSA PRIVATE KEY-----\n<your key here>\n-----END RSA PRIVATE KEY-----",
        "mysql -u root -p",
        "redis-cli -a $REDIS_PASSWORD ping",
        "curl -u $USER:$TOKEN https://ci.example.com",
        "psql postgresql://user:password@localhost:5432/db",
        "DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DB",
        "redis://:<password>@localhost:6379/0",
        'auth=("user", "pass")',
        "requests.get(url, auth=(username, password))",
        "Your temporary password is shown on screen after signup.",
        "The password is stored hashed with argon2id.",
        "Set a password of at least 12 characters.",
        "Enter your password: ",
    ],
    "address": [
        "Listen on 0.0.0.0:8080 and proxy to 127.0.0.1:9000.",
        "bind: 0.0.0.0",
        "curl http://127.0.0.1:8000/health",
        "The docs use 192.0.2.1, 198.51.100.7 and 203.0.113.42 as examples.",
        "server 192.0.2.10:443 weight=5;",
        "Connect to [::1]:5432 or ::1.",
        "The documentation prefix is 2001:db8::/32, e.g. 2001:db8::1.",
        "listen [::]:80;",
        "Upgraded openssl to 1.1.1.1? No: from 1.1.1 to 3.0.2.",
        "Released 1.0.0.0 today, then 2.4.1.0 with the fix.",
        "See section 4.2.1.3 of the spec.",
        "Assembly version 4.0.0.0, file version 4.8.3761.0.",
        "Chrome/120.0.6099.109 Safari/537.36",
        "OID 1.3.6.1.4.1.311 is Microsoft's.",
        "Installed node 18.19.0.0? No, 18.19.0.",
        "localhost resolves to 127.0.0.1 and ::1.",
        "netmask 255.255.255.0 broadcast 255.255.255.255",
        "SNMP 1.3.6.1.2.1.1.1.0 returns sysDescr.",
        "Clause 12.3.4.5 of the contract applies.",
        "Table 3.1.2.4 lists the figures.",
        "default route via 0.0.0.0/0",
        "DNS 127.0.0.53 (systemd-resolved)",
        "example: 203.0.113.0/24 is TEST-NET-3.",
        "Kernel 5.15.0.91 generic",
        "ipv6 loopback ::1 and unspecified ::",
    ],
    "email-like": [
        "git clone git@github.com:acme/widgets.git",
        "git remote add origin git@gitlab.com:team/app.git",
        "Send it to name@domain.tld (replace both parts).",
        "Use user@example.com as the login in the demo.",
        "Contact admin@example.org for the test account.",
        "The placeholder you@your-company.com appears in the form.",
        "Email format: firstname.lastname@company.com",
        "jane@example.net is the sample sender.",
        "support@acme.example is reserved for docs.",
        "from: noreply@app.test",
        "alice@localhost received the bounce",
        "npm install @types/node@20.1.0",
        "pip install requests==2.31.0 # pinned by dev@example.com",
        "ssh git@bitbucket.org:team/repo.git",
        "docker pull ghcr.io/org/app@sha256:" + "ab" * 32,
        "Use the @Override annotation.",
        "icon@2x.png and logo@3x.png",
        "postgres://user@localhost/db",
        "user@host:~$ ls -la",
        "root@ubuntu:/var/log# tail -f syslog",
        "email: your.email@example.com",
        "git@github.com:org/repo.git is the SSH form of the URL.",
        "Run `ssh -T git@github.com` to test.",
        "someone@somewhere.invalid bounced",
        "test@test.com is rejected by the validator.",
    ],
    "numbers": [
        "Part number 415-555-0132-B is back in stock.",
        "Order 212-555-0147 shipped on Monday.",
        "SKU 800-123-4567 (blue, size M).",
        "Ticket INC-415-555-0199 was closed.",
        "P/N 650-253-0000 replaces the old fan.",
        "Invoice no. 303-555-0100 is attached.",
        "Tracking 1Z999AA10123456784 arrives Friday.",
        "Build 20240115.3 took 14 minutes.",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "request id 550e8400-e29b-41d4-a716-446655440000",
        "epoch 1700000000123 ms",
        "Order #4111 1111 1111 1112 failed the check.",
        "Between 10:15 and 11:30 tomorrow.",
        "ISBN 978-3-16-148410-0",
        "The ratio was 16:9 at 1920x1080.",
        "std::vector<int> v; std::map<int, int> m;",
        "MAC 00:1A:2B:3C:4D:5E",
        "Version 2.4.1 was released on 2024-01-15.",
        "elapsed 00:01:23.456",
        "A bare 123456789 is just a number.",
        "id 123456789012 in the table",
        "The total is 1,234,567.89 USD.",
        "Call extension 4321 for help.",
        "ZIP 94103-1234",
        "Patent US 9,123,456 B2",
        "pid 12345 exited with 137",
        "offset 0x7ffe5367e044",
        "Lat 37.7749, Lon -122.4194",
        "range 10-20-30-40 items",
    ],
    "docs-cards": [
        "In test mode use 4111 1111 1111 1111 with any future date.",
        "Stripe test cards: 4242 4242 4242 4242 (Visa), 5555 5555 5555 4444 (Mastercard).",
        "Amex test number 3782 822463 10005 works in sandbox.",
        "Use 4000 0000 0000 0002 to simulate a decline.",
    ],
    "code": [
        "def check_password(password: str) -> bool:\n    return len(password) >= 12",
        "if not token:\n    raise ValueError('token required')",
        "parser.add_argument('--password', help='database password')",
        "password_field = forms.CharField(widget=forms.PasswordInput)",
        '<input type="password" name="password" autocomplete="current-password">',
        "SELECT id, email FROM users WHERE email = %s",
        "assert user.password != plaintext",
        "token_type: Literal['bearer', 'basic']",
        "api_key_header = APIKeyHeader(name='X-API-Key')",
        "const [password, setPassword] = useState('');",
        "password: string;",
        "fn verify(password: &str) -> bool",
        "@app.post('/login')\ndef login(username: str, password: str):",
        "private_key = serialization.load_pem_private_key(data, password=None)",
        "if (secret == null) throw new IllegalStateException();",
        "kubectl create secret generic db --from-literal=password=$DB_PASS",
        "secretName: tls-secret",
        "token_url: https://oauth2.googleapis.com/token",
        "authorization_endpoint: https://accounts.example.com/authorize",
        "email = models.EmailField(unique=True)",
        "phone = PhoneNumberField(region='US')",
        "ssn = forms.RegexField(regex=r'^\\d{3}-\\d{2}-\\d{4}$')",
        "CREDIT_CARD_RE = re.compile(r'\\d{4}[- ]?\\d{4}[- ]?\\d{4}[- ]?\\d{4}')",
        "ipaddress.ip_address('10.0.0.0')?  No: ipaddress.ip_network(cidr)",
        "matrix = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]",
        "for i in range(0, 255): subnet = f'10.0.{i}.0/24'",
        "password_reset_timeout = 3600",
        "token_expiry: 15m",
        "key_size: 2048",
        "secret_ref: vault://kv/app/db#password",
    ],
    "log": [
        "2024-05-02 10:11:12,345 INFO  [main] Started Application in 3.21 seconds (JVM running for 3.9)",
        "[2024-05-02T10:11:12.123Z] GET /api/v1/users/123 200 12.3ms",
        "nginx/1.25.3 started, worker processes: 4",
        "kernel: [ 1234.567890] usb 1-1: new high-speed USB device number 2",
        "Downloading torch-2.1.0+cu121-cp311-cp311-linux_x86_64.whl (2200.6 MB)",
        "python 3.11.7 (main, Dec 8 2023, 18:56:58) [GCC 11.4.0] on linux",
        'HTTP/1.1 401 Unauthorized\nWWW-Authenticate: Bearer realm="api"',
        'level=info msg="token refreshed" expires_in=3599',
        'auth: password authentication failed for user "postgres"',
        "WARN  secret rotation due in 3 days",
        "Mar 04 12:00:01 host sshd[812]: Accepted publickey for deploy from 127.0.0.1 port 51812",
        "docker: Digest: sha256:4c1f3b2e9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b",
        "go version go1.21.5 linux/amd64",
        "npm WARN deprecated uuid@3.4.0: Please upgrade",
        "Listening on http://0.0.0.0:3000",
        "pg_dump: version 16.1, server 15.4",
        "build 1.0.0.0 succeeded in 00:00:41.12",
        "Loaded 3 keys from keyring (fingerprints shown with --verbose)",
        'ERROR: relation "users" does not exist at character 15',
        "tcp 0 0 127.0.0.1:6379 0.0.0.0:* LISTEN",
    ],
    "prose": [
        "Rotate your API keys every 90 days and never commit them to git.",
        "Your password must contain a digit, an upper-case letter and a symbol.",
        "Store the private key in a secrets manager, not in the repository.",
        "An SSN has nine digits, written as three groups.",
        "Card numbers are validated with the Luhn algorithm.",
        "The IBAN for Germany has 22 characters.",
        "Tokens expire after one hour; refresh them with the refresh token.",
        "Passwords are compared in constant time.",
        "Set the token in the Authorization header as a Bearer token.",
        "The secret is rotated by the operator every night.",
    ],
}


_SECOND_CLEAN = [
    "The `--password` flag reads the password from stdin.",
    "mysql -u root -p$MYSQL_ROOT_PASSWORD",
    'export PGPASSWORD="$(op read op://vault/db/password)"',
    'curl -u "$USER:$PASS" https://ci.example.com',
    "Windows 10.0.19041.1 build",
    "Phone numbers look like (XXX) XXX-XXXX.",
    "SSN format: XXX-XX-XXXX",
    "IBAN format: DE00 0000 0000 0000 0000 00",
    "Keys begin with sk-proj- and are shown once.",
    "Connect with `psql -h localhost -U postgres`.",
    "docker run -p 127.0.0.1:5432:5432 postgres:16",
    "pip install 'django>=4.2,<5.0'",
    "Release 10.2.0.1 fixes the leak.",
    "See RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24.",
    "user_email = request.user.email",
    "Reset link sent to the address on file.",
    "Use `ssh -T git@gitlab.com` to check your key.",
    "token = jwt.encode(payload, key, algorithm='HS256')",
    "SECRET_KEY = env('DJANGO_SECRET_KEY')",
    "password = input('Password: ')",
]


def _more_clean() -> list[Clean]:
    """Generated near misses: versions, placeholders and doc addresses in every format."""
    out = [Clean("second-batch", text) for text in _SECOND_CLEAN]
    for i in range(40):
        major, minor, patch, build = _rng.randint(1, 9), _rng.randint(0, 20), _rng.randint(0, 20), _rng.randint(0, 9)
        version = f"{major}.{minor}.{patch}.{build}"
        out.append(
            Clean(
                "version",
                [
                    f"Upgraded the driver to {version} this morning.",
                    f"version: {version}\n",
                    f'"version": "{version}"',
                    f"FileVersion={version}",
                    f"[{version}] - 2024-01-{i % 28 + 1:02d}\n### Fixed",
                ][i % 5],
            )
        )
    docs = [
        f"192.0.2.{_rng.randint(1, 254)}",
        f"198.51.100.{_rng.randint(1, 254)}",
        f"203.0.113.{_rng.randint(1, 254)}",
    ]
    for i in range(15):
        ip = docs[i % 3]
        out.append(
            Clean(
                "address",
                [f"host: {ip}\n", f"ping {ip}", f'{{"server": "{ip}"}}', f"allow {ip};", f"SERVER={ip}"][i % 5],
            )
        )
    for i in range(15):
        name = _rng.choice(["DB_PASSWORD", "API_KEY", "SECRET_TOKEN", "CLIENT_SECRET", "AUTH_TOKEN"])
        out.append(
            Clean(
                "env-reference",
                [
                    f"{name.lower()} = os.environ['{name}']",
                    f"{name}=${{{name}}}",
                    f"{name.lower()}: ${{{name}}}",
                    f"const {name.lower()} = process.env.{name};",
                    f"{name.lower()} = os.getenv('{name}', '')",
                ][i % 5],
            )
        )
    return out


RECORDS: list[Record] = _records()
CLEAN: list[Clean] = [Clean(c, t) for c, items in _CLEAN_TEXTS.items() for t in items] + _more_clean()
CLEAN = [Clean(c.category, c.text, {"credit_card": 0.7}) if c.category == "docs-cards" else c for c in CLEAN]
