"""Word lists the demo world builds its names from.

Hand-written rather than a faker dependency: the world must be byte-identical for a seed on
every machine and every library version, and a few hundred words are enough to look real.
"""

from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = (
    "Aaliyah", "Aaron", "Abigail", "Adam", "Adrian", "Aisha", "Alan", "Alejandro", "Alex",
    "Alice", "Amara", "Amelia", "Ana", "Andrea", "Andrew", "Anna", "Anthony", "Arjun", "Ava",
    "Ben", "Bianca", "Brian", "Bruno", "Camila", "Carlos", "Caroline", "Charles", "Charlotte",
    "Chen", "Chloe", "Chris", "Claire", "Daniel", "David", "Diana", "Diego", "Dmitri", "Elena",
    "Elif", "Elijah", "Emily", "Emma", "Eric", "Ethan", "Fatima", "Felix", "Fiona", "Gabriel",
    "Grace", "Hannah", "Harper", "Hiroshi", "Ibrahim", "Ines", "Isabella", "Ivan", "Jack",
    "James", "Jana", "Javier", "Jennifer", "Jessica", "John", "Jonas", "Jose", "Julia", "Kai",
    "Karen", "Kenji", "Laura", "Leila", "Leo", "Liam", "Lina", "Lucas", "Lucia", "Maria",
    "Mark", "Marta", "Mateo", "Maya", "Mei", "Michael", "Mia", "Mohammed", "Nadia", "Natalie",
    "Nathan", "Nina", "Noah", "Olivia", "Omar", "Oscar", "Paul", "Priya", "Rachel", "Rafael",
    "Rahul", "Rebecca", "Robert", "Sakura", "Samuel", "Sara", "Sebastian", "Sofia", "Sophie",
    "Stefan", "Sven", "Tariq", "Thomas", "Tom", "Valentina", "Victor", "William", "Yara",
    "Yusuf", "Zoe",
)

LAST_NAMES: tuple[str, ...] = (
    "Abbott", "Adams", "Ahmed", "Alvarez", "Andersen", "Bailey", "Baker", "Becker", "Bennett",
    "Berg", "Brooks", "Brown", "Campbell", "Carter", "Castro", "Chen", "Clark", "Collins",
    "Cooper", "Costa", "Cruz", "Davies", "Davis", "Dubois", "Edwards", "Evans", "Fischer",
    "Fernandez", "Foster", "Garcia", "Gomez", "Green", "Gupta", "Hall", "Hansen",
    "Harris", "Hayes", "Hernandez", "Hill", "Hoffmann", "Hughes", "Ito", "Jackson", "Jansen",
    "Jensen", "Johnson", "Jones", "Kaya", "Kelly", "Khan", "Kim", "King", "Kowalski", "Kumar",
    "Larsen", "Lee", "Lewis", "Li", "Lopez", "Martin", "Martinez", "Meyer", "Miller", "Mitchell",
    "Moore", "Morales", "Morgan", "Murphy", "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen",
    "Ortiz", "Park", "Patel", "Perez", "Peters", "Petrov", "Phillips", "Popescu", "Powell",
    "Ramirez", "Reed", "Reyes", "Richter", "Rivera", "Roberts", "Rodriguez", "Rossi", "Russo",
    "Sanchez", "Santos", "Sato", "Schmidt", "Schneider", "Scott", "Shah", "Silva", "Singh",
    "Smith", "Sousa", "Stewart", "Suzuki", "Tanaka", "Taylor", "Thomas", "Thompson", "Turner",
    "Vasquez", "Wagner", "Walker", "Wang", "Ward", "Watson", "Weber", "White", "Williams",
    "Wilson", "Wong", "Wright", "Yamamoto", "Young", "Zhang",
)

COMPANY_CORES: tuple[str, ...] = (
    "Adatum", "Alpine", "Apex", "Atlas", "Aurora", "Bluewater", "Boreal", "Brightline",
    "Cascade", "Cedar", "Coho", "Contoso", "Copperleaf", "Crestview", "Delta", "Evergreen",
    "Fabrikam", "Falcon", "Fourth Coffee", "Granite", "Harbor", "Helios", "Highland", "Horizon",
    "Humongous", "Ironwood", "Juniper", "Keystone", "Lakeshore", "Litware", "Lucerne", "Maple",
    "Margie's", "Meridian", "Northwind", "Nova", "Oakridge", "Orion", "Pacific", "Pinnacle",
    "Proseware", "Quantum", "Redwood", "Riverbend", "Sapphire", "Silverline", "Southridge",
    "Summit", "Tailspin", "Terra", "Trey", "Vanguard", "Vertex", "Wide World", "Wingtip",
    "Woodgrove", "Zenith",
)

COMPANY_KINDS: tuple[str, ...] = (
    "Analytics", "Bank", "Builders", "Capital", "Consulting", "Dynamics", "Energy", "Engineering",
    "Foods", "Freight", "Health", "Holdings", "Industries", "Insurance", "Labs", "Logistics",
    "Manufacturing", "Media", "Medical", "Motors", "Partners", "Pharma", "Retail", "Software",
    "Systems", "Telecom", "Textiles", "Trading", "Travel", "Ventures",
)

COMPANY_SUFFIXES: tuple[str, ...] = (
    "Inc.", "Ltd", "LLC", "GmbH", "S.A.", "plc", "Corp.", "AG", "B.V.", "Group", "", "", "",
)

CITIES: tuple[str, ...] = (
    "Amsterdam", "Atlanta", "Austin", "Barcelona", "Berlin", "Boston", "Brussels", "Chicago",
    "Copenhagen", "Dallas", "Denver", "Dublin", "Frankfurt", "Hamburg", "Helsinki", "Houston",
    "Lisbon", "London", "Los Angeles", "Lyon", "Madrid", "Manchester", "Miami", "Milan",
    "Minneapolis", "Montreal", "Munich", "New York", "Oslo", "Paris", "Philadelphia",
    "Phoenix", "Portland", "Prague", "Redmond", "San Diego", "San Francisco", "Seattle",
    "Stockholm", "Toronto", "Vancouver", "Vienna", "Warsaw", "Zurich",
)

INDUSTRIES: tuple[tuple[str, int, int], ...] = (
    # (source label, Dataverse industrycode option value, weight)
    ("Accounting", 1, 3),
    ("Agriculture", 2, 2),
    ("Broadcasting", 3, 2),
    ("Business Services", 6, 10),
    ("Consulting", 7, 9),
    ("Healthcare", 11, 7),
    ("Manufacturing", 12, 12),
    ("Financial", 16, 9),
    ("Insurance", 20, 5),
    ("Legal Services", 21, 3),
    ("Retail", 22, 8),
    ("Transportation", 30, 6),
    ("Utilities", 31, 3),
    ("Wholesale", 33, 6),
)

OWNERS: tuple[str, ...] = (
    "a.novak", "b.okafor", "c.lindqvist", "d.ramirez", "e.tanaka", "f.moreau", "g.schneider",
    "h.patel", "i.kowalski", "j.alvarez", "k.osei", "l.fischer", "m.chen", "n.rossi",
    "o.hansen", "p.singh",
)

PRODUCTS: tuple[str, ...] = (
    "Laptops", "Service Contract", "Cloud Migration", "Fleet Renewal", "Support Upgrade",
    "Licences", "Data Platform", "Managed Print", "Field Service", "Training Package",
    "Security Audit", "Network Refresh", "ERP Rollout", "Consulting Days", "Hardware Bundle",
    "Subscription Renewal", "Analytics Pilot", "Warehouse Scanners", "Call Centre Seats",
    "Maintenance Plan",
)

MAIL_DOMAINS: tuple[str, ...] = (
    "outlook.com", "gmail.com", "proton.me", "yahoo.com", "icloud.com", "gmx.net",
)

AREA_CODES: tuple[str, ...] = (
    "206", "212", "305", "312", "415", "425", "512", "617", "646", "702", "720", "773", "808",
    "917",
)
