"""The word lists the precision guard reads (proxy/cache/semantic_guard.py).

Kept apart from the guard's logic so that a list grows without touching the rules. Every
entry is lower case; multi-word entries are written with single spaces.
"""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


# Words that flip a statement; a token ending in "n't" counts too.
NEGATIONS = frozenset(
    _words(
        "not no never none nothing nobody nowhere neither nor without cannot cant dont doesnt didnt isnt arent "
        "wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt"
    )
)

NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        _words(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
            "seventeen eighteen nineteen twenty"
        )
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
     "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12",
     "half": "0.5", "twice": "x2", "double": "x2", "triple": "x3"}  # fmt: skip

# Units and the one spelling they are compared by. Single letters and words that are also common
# English ("in", "m", "s") count only right after a number: see AFTER_NUMBER_ONLY.
_UNIT_GROUPS = {
    "km": "km kms kilometer kilometers kilometre kilometres",
    "m": "m meter meters metre metres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "mm": "mm millimeter millimeters millimetre millimetres",
    "mi": "mi mile miles",
    "ft": "ft foot feet",
    "in": "in inch inches",
    "yd": "yd yard yards",
    "kg": "kg kgs kilogram kilograms kilo kilos",
    "g": "g gram grams gramme grammes",
    "mg": "mg milligram milligrams",
    "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces",
    "t": "tonne tonnes ton tons",
    "l": "l liter liters litre litres",
    "ml": "ml milliliter milliliters millilitre millilitres",
    "gal": "gal gallon gallons",
    "cup": "cup cups",
    "tbsp": "tbsp tablespoon tablespoons",
    "tsp": "tsp teaspoon teaspoons",
    "c": "c celsius centigrade",
    "f": "f fahrenheit",
    "k": "kelvin",
    "deg": "degree degrees",
    "mph": "mph",
    "kmh": "km/h kmh kph",
    "b": "byte bytes",
    "kb": "kb kib kilobyte kilobytes",
    "mb": "mb mib megabyte megabytes",
    "gb": "gb gib gigabyte gigabytes",
    "tb": "tb tib terabyte terabytes",
    "kwh": "kwh",
    "mwh": "mwh",
    "w": "w watt watts",
    "kw": "kw kilowatt kilowatts",
    "ms": "ms millisecond milliseconds",
    "s": "s sec secs second seconds",
    "min": "min mins minute minutes",
    "h": "h hr hrs hour hours",
    "day": "day days",
    "week": "week weeks",
    "month": "month months",
    "year": "year years",
    "ly": "light-year light-years lightyear lightyears",
    "pc": "parsec parsecs",
    "usd": "usd dollar dollars $",
    "eur": "eur euro euros €",
    "gbp": "gbp sterling £",
    "jpy": "jpy yen ¥",
    "pct": "% percent per-cent percentage",
}
UNITS = {word: canonical for canonical, words in _UNIT_GROUPS.items() for word in words.split()}
AFTER_NUMBER_ONLY = frozenset({"m", "in", "g", "l", "c", "f", "s", "h", "w", "t", "b", "min", "sec", "mi", "pc", "k"})

MONTHS = frozenset(
    _words(
        "january february march april may june july august september october november december "
        "jan feb mar apr jun jul aug sep sept oct nov dec"
    )
)
# Month names that are also common words count only next to a number or capitalised mid-sentence.
AMBIGUOUS_MONTHS = frozenset({"may", "march", "mar", "jan", "dec", "sep", "oct", "nov", "aug"})
DATE_WORDS = frozenset(
    _words(
        "monday tuesday wednesday thursday friday saturday sunday today tonight tomorrow yesterday morning "
        "afternoon evening night noon midnight weekend weekday spring summer autumn winter christmas easter "
        "halloween thanksgiving"
    )
)
# "next week", "last month": the modifier is part of the date.
DATE_MODIFIERS = frozenset({"last", "next", "this", "previous", "coming", "past", "current"})
PERIODS = frozenset(_words("day week weekend month year quarter decade century season")) | DATE_WORDS

# Words whose opposite in the other prompt asks the opposite question. Each group holds sides that
# exclude each other: a prompt with words of one side and none of another never matches a prompt
# with words of that other side and none of the first.
_OPPOSITE_GROUPS = (
    "encrypt encrypts encrypted encryption | decrypt decrypts decrypted decryption",
    "upload uploads uploading uploaded | download downloads downloading downloaded",
    "import imports importing imported | export exports exporting exported",
    "increase increases increasing raise raising boost | decrease decreases decreasing lower lowering reduce",
    "enable enables enabling enabled | disable disables disabling disabled",
    "add adding adds | remove removing removes delete deleting",
    "buy buying | sell selling",
    "gain gaining | lose losing",
    "win winning won | lose losing lost",
    "max maximum highest largest biggest | min minimum lowest smallest",
    "first | last",
    "before | after",
    "above | below",
    "over | under",
    "more | less fewer",
    "higher | lower",
    "faster | slower",
    "better | worse",
    "best | worst",
    "advantages pros benefits | disadvantages cons risks drawbacks",
    "start starting | stop stopping",
    "open opening | close closing",
    "include including | exclude excluding",
    "legal | illegal",
    "safe | unsafe dangerous",
    "positive | negative",
    "true | false",
    "left | right",
    "north | south",
    "east | west",
    "hot | cold",
    "push | pull",
    "send sending | receive receiving",
    "allow allowing | deny block blocking forbid",
    "accept accepting | reject rejecting",
    "ascending | descending",
    "uppercase | lowercase",
    "compress compressing compression | decompress decompressing decompression",
    "encode encoding | decode decoding",
    "serialize serialization | deserialize deserialization",
    "install installing | uninstall uninstalling",
    "subscribe | unsubscribe",
    "lock locking | unlock unlocking",
    "mount | unmount",
    "zip | unzip",
    "inbound incoming | outbound outgoing",
    "input | output",
)
OPPOSITES: tuple[tuple[frozenset[str], ...], ...] = tuple(
    tuple(frozenset(_words(side)) for side in group.split(" | ")) for group in _OPPOSITE_GROUPS
)


# Place names a prompt may write in lower case (cities, countries, languages): matched as entities
# wherever they stand. Names that are also common words (Nice, Reading, Mobile, Turkey) are left out:
# capitalisation finds those when they are names.
_PLACES = """
    tokyo delhi shanghai sao-paulo mexico-city cairo mumbai beijing dhaka osaka new-york karachi buenos-aires
    chongqing istanbul kolkata manila lagos rio-de-janeiro tianjin kinshasa guangzhou los-angeles moscow
    shenzhen lahore bangalore paris bogota jakarta chennai lima bangkok seoul nagoya hyderabad london tehran
    chicago chengdu nanjing wuhan ho-chi-minh-city luanda ahmedabad kuala-lumpur hong-kong hangzhou riyadh
    surat santiago madrid pune houston dallas toronto dar-es-salaam miami belo-horizonte singapore philadelphia
    atlanta fukuoka khartoum barcelona johannesburg saint-petersburg washington yangon alexandria guadalajara
    ankara melbourne sydney brisbane perth adelaide auckland wellington abidjan nairobi casablanca marrakesh
    berlin hamburg munich cologne frankfurt stuttgart dusseldorf rome milan naples turin florence venice vienna
    prague budapest warsaw krakow lisbon porto amsterdam rotterdam the-hague brussels antwerp zurich geneva
    basel bern copenhagen stockholm oslo helsinki reykjavik dublin cork edinburgh glasgow manchester liverpool
    birmingham leeds bristol athens thessaloniki bucharest sofia belgrade zagreb kyiv kiev minsk riga vilnius
    tallinn lyon marseille toulouse bordeaux lille valencia seville malaga bilbao san-francisco seattle
    portland boston denver austin phoenix san-diego san-jose las-vegas detroit minneapolis nashville
    new-orleans baltimore pittsburgh cleveland montreal vancouver calgary ottawa quebec havana panama-city
    caracas quito montevideo asuncion la-paz brasilia salvador recife medellin cali dubai abu-dhabi doha
    kuwait-city muscat jerusalem tel-aviv beirut amman damascus baghdad kabul islamabad kathmandu colombo hanoi
    phnom-penh vientiane taipei kyoto yokohama sapporo busan pyongyang ulaanbaatar almaty tashkent baku tbilisi
    yerevan accra dakar addis-ababa kampala kigali harare lusaka cape-town durban tunis algiers tripoli
    afghanistan albania algeria andorra angola argentina armenia australia austria azerbaijan bahamas bahrain
    bangladesh barbados belarus belgium belize benin bhutan bolivia bosnia botswana brazil brunei bulgaria
    burkina-faso burundi cambodia cameroon canada chad chile china colombia congo costa-rica croatia cuba
    cyprus czechia czech-republic denmark djibouti dominican-republic ecuador egypt el-salvador eritrea estonia
    eswatini ethiopia fiji finland france gabon gambia georgia germany ghana greece guatemala guinea guyana
    haiti honduras hungary iceland india indonesia iran iraq ireland israel italy jamaica japan jordan
    kazakhstan kenya kosovo kuwait kyrgyzstan laos latvia lebanon lesotho liberia libya liechtenstein lithuania
    luxembourg madagascar malawi malaysia maldives mali malta mauritania mauritius mexico moldova monaco
    mongolia montenegro morocco mozambique myanmar namibia nepal netherlands holland new-zealand nicaragua
    niger nigeria north-korea south-korea korea north-macedonia norway oman pakistan palestine panama paraguay
    peru philippines poland portugal qatar romania russia rwanda saudi-arabia senegal serbia sierra-leone
    slovakia slovenia somalia south-africa south-sudan spain sri-lanka sudan suriname sweden switzerland syria
    taiwan tajikistan tanzania thailand togo tunisia turkmenistan uganda ukraine united-arab-emirates uae
    united-kingdom uk britain great-britain england scotland wales united-states usa america uruguay uzbekistan
    venezuela vietnam yemen zambia zimbabwe europe asia africa antarctica oceania english german french spanish
    italian portuguese dutch swedish norwegian danish finnish czech russian ukrainian greek turkish arabic
    hebrew persian hindi bengali urdu chinese mandarin cantonese japanese korean vietnamese thai indonesian
    malay swahili
"""
PLACES = frozenset(name.replace("-", " ") for name in _words(_PLACES))
