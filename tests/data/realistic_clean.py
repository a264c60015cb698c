"""Clean texts of the realistic redaction corpus: they look dangerous and must come back unchanged.

Labelling rules are in redaction_realistic.py, which builds the corpus from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.data.realistic_values import rng


@dataclass(frozen=True)
class Clean:
    category: str
    text: str
    thresholds: dict[str, float] = field(default_factory=dict)


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
        major, minor, patch, build = rng.randint(1, 9), rng.randint(0, 20), rng.randint(0, 20), rng.randint(0, 9)
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
        f"192.0.2.{rng.randint(1, 254)}",
        f"198.51.100.{rng.randint(1, 254)}",
        f"203.0.113.{rng.randint(1, 254)}",
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
        name = rng.choice(["DB_PASSWORD", "API_KEY", "SECRET_TOKEN", "CLIENT_SECRET", "AUTH_TOKEN"])
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


def clean_texts() -> list[Clean]:
    """Every clean text; docs quoting test cards are clean under `credit_card: 0.7`."""
    texts = [Clean(c, t) for c, items in _CLEAN_TEXTS.items() for t in items] + _more_clean()
    return [Clean(c.category, c.text, {"credit_card": 0.7}) if c.category == "docs-cards" else c for c in texts]
