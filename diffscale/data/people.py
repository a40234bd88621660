"""Who is in a COCO image, read from its captions: people, gender, age, group size, activity.

Every word list lives in this module (`WORDS`, the modifier tables, `ACTIVITIES`); config
(`data.people.words`) can only extend them (`Lexicon.from_config`). Labelling has two steps:

1. `Lexicon.read(caption)` reads ONE caption into a `CaptionReading`: the real people it mentions
   (each with gender, age and head count), whether it only talks about a depicted person (a statue,
   doll, poster, a man on TV), and its activity. Captions are split into words, so "woman" never
   matches "man" and a "snowman" is no man; plurals are listed forms ("men", "children"); phrases
   ("a couple of", "little league", "3 year old", "shaped like") are matched on word sequences.
2. `label_image(readings)` decides the image's labels from all its captions together.

How captions are combined: presence by one mention, everything else by majority reading.

* people: one explicit mention of a real human is enough; the image shows people when at least
  one caption mentions a real person and such captions are at least as many as those that see
  only a depicted person ("a statue of a man" four times against "a man on a horse" once is a
  statue). A caption that mentions nobody is no evidence against one that does; how central the
  people are is the filter's business (`min_person_captions`).
* Each caption that mentions people gives ONE reading of gender, age and group
  (`CaptionReading.gender_reading`, `.age_reading`, `.group_reading`); captions that mention
  nobody do not vote. A caption whose people carry no gendered word ("a person", "a skier", "two
  players") reads neutral; one with no age cue reads unspecified; both readings vote like any
  other. "his"/"her" give a gender to a caption's one unnamed person ("a surfer on his board").
* The image takes the most frequent reading among its person captions: 3 x "a man" + 2 x "a
  person" is male; 2 x "a woman" + 3 x "a person" is neutral; 2 x "a man" + 2 x "a person" + 1 x
  "a woman" is male.
* Ties: a specific reading beats an unspecific one (male over neutral, adult over unspecified).
  Gender: male against female (or mixed) is neutral for one person (group single) and mixed for
  several; mixed is for images that show people of both genders. Age: between specific ages the
  first of child, teen, elderly, adult wins. Group: the larger head count, where an unnumbered
  plural ("boys", "people") is consistent with an explicit "two" (pair) and more than one.
* gender of a caption: male or female words only, male or female; both ("a man and a woman", "a
  couple"), mixed; none, neutral.
* age of a caption: man, woman, lady, guy and adult roles (father, businessman, bride) are adult;
  "young man"/"young woman" are adult; boy, girl, kid, child, baby, toddler, little/young boy or
  girl are child; teen/teenager/adolescent teen; old/elderly man or woman, senior, grandmother/
  grandfather elderly; "N year old" by N; "male skateboarder" and "young person" are unspecified.
  A caption naming several ages reads the first of child, teen, elderly, adult ("a man and a boy"
  reads child).
* group of a caption: one person single (a hand alone is one person); two people or a couple
  pair; three or more, or an unnumbered plural (people, crowd, team, group, family) group.
* activity: each caption's most specific activity (sports before riding; eating, phones, … before
  sitting/standing); the image takes the most frequent one among its person captions, ties to the
  more specific; "other" when none is named, "none" without people.

Images without people get gender neutral, age unspecified, group single, activity none: the
`people` column is the one to filter on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from diffscale.errors import ConfigError

GENDERS = ("male", "female", "mixed", "neutral")
AGES = ("child", "teen", "adult", "elderly", "unspecified")
GROUPS = ("single", "pair", "group")
MANY = 3            # head counts stop here: three or more people are a group
BARE_PLURAL = 2.5   # "people": at least two, exactly how many other captions may say
AGE_ORDER = ("child", "teen", "elderly", "adult")  # within a caption and in a tie, the first wins
OTHER_ACTIVITY = "other"
NO_ACTIVITY = "none"

# ---------------------------------------------------------------------------------------------
# Word lists: the one place. "singular/plural" pairs; a lone word has no other form.
# ---------------------------------------------------------------------------------------------
WORDS: dict[str, str] = {
    # Person nouns, keyed by the gender and age they imply.
    "male adult": """man/men guy/guys gentleman/gentlemen dude/dudes husband/husbands father/fathers
        dad/dads boyfriend/boyfriends businessman/businessmen policeman/policemen fireman/firemen
        fisherman/fishermen cowboy/cowboys groom/grooms monk/monks priest/priests uncle/uncles
        salesman/salesmen cameraman/cameramen workman/workmen repairman/repairmen
        sportsman/sportsmen baseman/basemen horseman/horsemen craftsman/craftsmen""",
    "female adult": """woman/women lady/ladies wife/wives mother/mothers mom/moms mum/mums
        girlfriend/girlfriends businesswoman/businesswomen policewoman/policewomen bride/brides
        waitress/waitresses actress/actresses housewife/housewives aunt/aunts nun/nuns
        sportswoman/sportswomen horsewoman/horsewomen ballerina/ballerinas gal/gals""",
    "male child": "boy/boys son/sons schoolboy/schoolboys",
    "female child": "girl/girls daughter/daughters schoolgirl/schoolgirls",
    "male": "male/males brother/brothers",
    "female": "female/females sister/sisters",
    "child": """child/children kid/kids baby/babies toddler/toddlers infant/infants
        youngster/youngsters newborn/newborns schoolchild/schoolchildren""",
    "teen": "teenager/teenagers teen/teens adolescent/adolescents youth/youths",
    "adult": "adult/adults parent/parents grownup/grownups",
    "elderly": "grandparent/grandparents elder/elders retiree/retirees senior/seniors",
    "male elderly": "grandfather/grandfathers grandpa/grandpas",
    "female elderly": "grandmother/grandmothers grandma/grandmas granny/grannies",
    "person": """person/people persons someone somebody individual/individuals human/humans
        player/players skier/skiers surfer/surfers snowboarder/snowboarders skateboarder/skateboarders
        skater/skaters boarder/boarders kiteboarder/kiteboarders windsurfer/windsurfers
        kitesurfer/kitesurfers parasailer/parasailers rider/riders biker/bikers cyclist/cyclists
        bicyclist/bicyclists motorcyclist/motorcyclists jockey/jockeys athlete/athletes
        catcher/catchers umpire/umpires referee/referees outfielder/outfielders infielder/infielders
        shortstop/shortstops golfer/golfers swimmer/swimmers diver/divers jogger/joggers
        hiker/hikers climber/climbers camper/campers tourist/tourists traveler/travelers
        traveller/travellers passenger/passengers commuter/commuters pedestrian/pedestrians
        spectator/spectators onlooker/onlookers bystander/bystanders fans customer/customers
        shopper/shoppers vendor/vendors seller/sellers merchant/merchants chef/chefs baker/bakers
        butcher/butchers waiter/waiters bartender/bartenders barista/baristas cashier/cashiers
        clerk/clerks worker/workers employee/employees officer/officers cop/cops soldier/soldiers
        firefighter/firefighters pilot/pilots driver/drivers mechanic/mechanics farmer/farmers
        rancher/ranchers shepherd/shepherds herder/herders sailor/sailors photographer/photographers
        reporter/reporters journalist/journalists musician/musicians guitarist/guitarists
        singer/singers dancer/dancers performer/performers clown/clowns artist/artists
        student/students teacher/teachers doctor/doctors nurse/nurses patient/patients
        scientist/scientists owner/owners friend/friends buddy/buddies roommate/roommates
        guest/guests visitor/visitors resident/residents citizen/citizens teammate/teammates
        opponent/opponents competitor/competitors contestant/contestants racer/racers
        paddler/paddlers kayaker/kayakers rower/rowers lifeguard/lifeguards gymnast/gymnasts
        wrestler/wrestlers president/presidents politician/politicians
        coach/coaches trainer/trainers instructor/instructors cook/cooks pitcher/pitchers
        batter/batters runner/runners police sibling/siblings twins cousin/cousins
        participant/participants volunteer/volunteers attendant/attendants official/officials
        operator/operators conductor/conductors observer/observers cleaner/cleaners hitter/hitters
        skiier/skiiers""",
    # Collective person nouns; before "of" they are quantifiers ("a family of giraffes").
    "group": "crowd/crowds family/families team/teams audience/audiences group/groups",
    # A couple (not "a couple of") is a man and a woman, as COCO's annotators use the word.
    "mixed pair": "couple/couples",
    # A hand holding a cup is a person in the picture ...
    "acting body part": "hand/hands arm/arms finger/fingers foot/feet leg/legs",
    # ... and so is "a man's face"; "a man's urinal" and "someone's room" are not.
    "body part": """hand/hands arm/arms finger/fingers foot/feet leg/legs face/faces head/heads hair
        mouth/mouths lap shoulder/shoulders knee/knees eye/eyes nose body belly stomach chest teeth
        lips toes thumb wrist palm back reflection shadow""",
    # Things that look like people but are not: "a statue of a man", "a woman mannequin".
    "figure": """statue/statues sculpture/sculptures figurine/figurines figure/figures doll/dolls
        mannequin/mannequins scarecrow/scarecrows cutout/cutouts bust/busts replica/replicas
        carving/carvings topper/toppers ornament/ornaments shape/shapes""",
    # Media that show people: "a poster of a woman", "a sign with a man on it", "a man on TV".
    "medium": """poster/posters painting/paintings drawing/drawings mural/murals portrait/portraits
        cartoon/cartoons billboard/billboards sign/signs advertisement/advertisements ad/ads
        banner/banners graffiti sticker/stickers magnet/magnets silhouette/silhouettes
        tv/tvs television/televisions screen/screens monitor/monitors magazine/magazines
        cover/covers calendar/calendars book/books box/boxes package/packages card/cards
        print/prints postcard/postcards toy/toys mirage/mirages hologram/holograms""",
    # Before a person noun, these make it a thing: "a lego man", "toy soldiers".
    "figure modifier": """lego leggo toy plastic stuffed paper cardboard cartoon gingerbread clay porcelain
        ceramic stone bronze metal marble fake inflatable animated rubber miniature wax wooden
        painted""",
    # "a picture of a man" is the photo itself at the start of a caption and a depiction elsewhere
    # ("a man holding a picture of a woman").
    "frame": """picture/pictures photo/photos photograph/photographs image/images pic/pics shot/shots
        snapshot/snapshots view/views closeup/closeups""",
    # A person noun before one of these is a modifier: "baby elephant"; and "his"/"her" in a
    # caption that names an animal may be the animal's ("a cat scratching his ear").
    "animal": """elephant/elephants giraffe/giraffes zebra/zebras bear/bears cow/cows
        calf/calves sheep lamb/lambs goat/goats horse/horses pony/ponies foal/foals bird/birds
        duck/ducks duckling/ducklings chick/chicks chicken/chickens goose/geese swan/swans dog/dogs
        puppy/puppies cat/cats kitten/kittens kitty animal/animals deer fawn/fawns monkey/monkeys
        gorilla/gorillas lion/lions tiger/tigers owl/owls seal/seals pig/pigs piglet/piglets
        rhino/rhinos hippo/hippos cub/cubs bull/bulls ox/oxen cattle camel/camels llama/llamas
        panda/pandas penguin/penguins turtle/turtles fish dolphin/dolphins whale/whales
        squirrel/squirrels rabbit/rabbits bunny/bunnies mouse/mice rat/rats frog/frogs
        alpaca/alpacas donkey/donkeys mule/mules buffalo bison yak/yaks antelope/antelopes
        pigeon/pigeons seagull/seagulls gull/gulls parrot/parrots eagle/eagles hawk/hawks
        sparrow/sparrows""",
    # ... and so is one before these: "passenger train", "police car", "baby blue".
    "not a person after": """train/trains jet/jets plane/planes airplane/airplanes airliner/airliners
        bus/buses car/cars van/vans boat/boats ship/ships ferry/ferries seat/seats side
        area/areas terminal/terminals window/windows cabin/cabins door/doors stroller/strollers
        carriage/carriages bottle/bottles shower/showers food crib/cribs clothes shoes gate/gates
        room/rooms bed/beds blanket/blankets made hole/holes station/stations tape department motorcycle/motorcycles vehicle/vehicles truck/trucks suv helicopter/helicopters
        cruiser/cruisers lights light barricade/barricades mover/movers menu/menus piano/pianos
        portrait photo picture tree/trees grand bib doll/dolls toy/toys wipes formula carrot/carrots
        spinach blue pink powder book/books tooth teeth together cake/cakes clock/clocks engine/engines
        sized size teddy trolley/trolleys trolly tram/trams streetcar/streetcars subway cart/carts
        office/offices sign/signs rail/rails""",
    # Not people after these words: "a cd player", "ceiling fans", "a spider man cake".
    "not a person before": """cd dvd mp3 music media cassette vinyl ceiling electric exhaust desk video
        record spider iron pac snow super bat""",
    # Nobody is found after these: "no people", "without anyone", "empty of people".
    "negation": "no not without nobody",
}
# The lists config may extend (data.people.words.<name>), and the WORDS key each one feeds.
CONFIG_LISTS = {
    "person": "person", "male": "male", "female": "female", "child": "child", "teen": "teen",
    "adult": "adult", "elderly": "elderly", "figure": "figure", "medium": "medium",
    "not_a_person_after": "not a person after",
}
PERSON_KEYS = ("male adult", "female adult", "male child", "female child", "male", "female", "child",
               "teen", "adult", "elderly", "male elderly", "female elderly", "person", "group", "mixed pair")

# Modifiers inside a person's noun phrase, and what they say about age.
AGE_MODIFIERS: dict[str, str] = {
    "young": "young", "younger": "young", "little": "child", "small": "child", "tiny": "child",
    "baby": "child", "toddler": "child", "infant": "child", "preschool": "child", "school": "child",
    "kindergarten": "child", "teenage": "teen", "teenaged": "teen", "teen": "teen",
    "adolescent": "teen", "old": "old", "older": "old", "elderly": "elderly", "aged": "elderly",
    "senior": "elderly", "retired": "elderly", "elder": "elderly", "adult": "adult", "grown": "adult",
    "college": "adult",
}
AGE_PHRASES: dict[tuple[str, str], str] = {
    ("little", "league"): "child", ("high", "school"): "teen", ("middle", "aged"): "adult",
    ("middle", "age"): "adult", ("grey", "haired"): "elderly", ("gray", "haired"): "elderly",
    ("white", "haired"): "elderly", ("senior", "citizen"): "elderly",
}
GENDER_MODIFIERS = {"male": "male", "female": "female"}
NUMBER_WORDS: dict[str, int] = {
    "a": 1, "an": 1, "one": 1, "single": 1, "lone": 1, "solo": 1, "another": 1,
    "two": 2, "both": 2, "pair": 2,
    **{w: MANY for w in """three four five six seven eight nine ten eleven twelve fifteen twenty
       dozen dozens hundreds thousands several many some few multiple numerous various lots other
       others""".split()},
}
# "a two year old": ages in words.
YEAR_WORDS = {w: k for k, w in enumerate("""zero one two three four five six seven eight nine ten eleven
    twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty""".split())}
ARTICLES = {"the", "this", "that", "these", "those"}
POSSESSORS = {"his", "her", "their", "my", "our", "your"}
DETERMINERS = ARTICLES | POSSESSORS | {"any", "every", "each", "all", "such", "its"}
# "a group of men", "a couple of kids": the word before "of" and the head count it gives.
QUANTIFIERS: dict[str, int] = {
    "couple": 2, "pair": 2, "duo": 2,
    **{w: MANY for w in """group groups bunch crowd crowds team teams family families number lot lots
       line lines row rows dozens handful band gathering mob party squad trio few several many some
       all set class""".split()},
}
QUANTIFIER_ADJECTIVES = {"large", "big", "small", "huge", "whole", "little", "entire"}
DEPICT_LINKS = {"of", "with", "showing", "shows", "depicting", "depicts", "featuring", "features",
                "displaying", "displays"}
RESEMBLE_VERBS = {"shaped", "look", "looks", "looking", "resembling", "resembles", "resemble", "made",
                  "dressed", "designed", "decorated", "disguised"}
# "taking a picture of people": the people are real.
TAKE_VERBS = {"taking", "takes", "take", "took", "snapping", "snaps", "shooting", "shoots", "getting",
              "gets", "having", "has", "posing", "poses", "pose"}
# Before a framing word, these make it a picture inside the photo: "a man holding a picture of ...".
HOLDS_A_PICTURE = set("""holding holds hold held carrying carries showing shows displaying displays
    hanging hangs hung on in at with near next by from behind beside under above over against wall
    walls framed painted printed drawn""".split())
ON_SCREEN = {"tv", "television", "screen", "monitor", "poster", "billboard", "painting", "mural",
             "magazine", "cover", "display", "photo", "picture", "photograph", "image"}
# Words that end a noun phrase when walking back from its noun.
BREAKERS = set("""with on in at of by to from near next behind for while as into onto under over
    beside besides between through across around along against about after before during like than
    toward towards up down off out inside outside underneath above below beneath past atop upon
    within without via and or but nor who that which whose where when is are was were be been being
    has have had holds sits stands rides plays looks walks watches eats takes makes gets waits shows
    uses carries wears appears seems gives helps poses does do can will would could should may might
    must not , . ; : ! ? ( )""".split())
NOT_VERBS = {"aged", "teenaged", "haired", "bearded", "helmeted", "dressed", "red", "bed", "shed",
             "young", "king", "spring", "something", "nothing", "ring", "wing", "string", "evening",
             "clothing", "building", "ceiling", "wedding", "morning"}
GENDER_PRONOUNS = {"he": "male", "him": "male", "his": "male", "himself": "male",
                   "she": "female", "her": "female", "hers": "female", "herself": "female"}
# Possessives written without the apostrophe ("a persons hat").
BARE_POSSESSIVES = {"persons", "someones", "somebodys", "mans", "womans", "childs"}
# Nouns that are people only in a sports context ("a pitcher of beer", "cake batter").
NEEDS_CONTEXT = {"pitcher", "pitchers", "batter", "batters", "runner", "runners"}
SPORTS_CONTEXT = set("""baseball ball bat bats batting base bases mound plate pitch pitches pitching game
    field catcher umpire inning swing swings swinging softball dugout throw throws throwing league
    uniform glove mitt race track marathon""".split())
# Nouns that are also verbs ("while they cook", "coach buses"): people only after a determiner.
NOUN_AFTER_DETERMINER = {"cook", "cooks", "coach", "coaches", "official", "officials", "operator",
                         "conductor", "trainer", "trainers"}
# Collectives that are people only when nothing but a verb or a person follows.
AMBIGUOUS_COLLECTIVES = {"couple", "couples", "group", "groups"}
# Seen only by the camera: "a zebra notices the photographer" (but "a photographer at work" is there).
BEHIND_CAMERA = {"photographer", "cameraman", "viewer"}
# "zebras standing in a group", "elephants grouped together": not a group of people.
NOT_A_PERSON_IN = {"group", "groups"}
# "waiting for people", "carrying passengers": nobody in the picture.
ABSENT_AFTER = {("waiting", "for"), ("waits", "for"), ("wait", "for"), ("room", "for"), ("space", "for")}
CARRY_VERBS = {"carrying", "carries", "carry", "transporting", "transports", "pick", "picking",
               "load", "loading", "unloading", "drop", "dropping"}

# Activities by specificity: earlier entries win within a caption and break ties between captions.
# A phrase is words in order; "a ~ b" means b within four words after a.
ACTIVITIES: dict[str, str] = {
    "skiing": "ski | skis | skiis | skiing | skier | skiers | skies ~ snow | cross country",
    "snowboarding": "snowboard | snowboards | snowboarding | snowboarder | snowboarders | snow board",
    "kitesurfing": """kiteboarding | kiteboarder | kitesurfing | kite surfing | kite surfer | windsurfing |
        windsurfer | parasailing | para sailing | parasailer | para sailors | para surfers | kite boarding""",
    "surfing": """surf | surfs | surfing | surfer | surfers | surfboard | surfboards | surf board |
        boogie board | body board | riding ~ wave | rides ~ wave | catch ~ wave | catching ~ wave""",
    "skateboarding": """skateboard | skateboards | skateboarding | skateboarder | skateboarders |
        skate board | skate park | skater | skaters | skating""",
    "tennis": "tennis | racket | racquet | rackets | racquets",
    "baseball": """baseball | softball | batter | batting | pitcher ~ mound | pitching | catcher |
        umpire | home plate | dugout | bat""",
    "frisbee": "frisbee | frisbees | frisbe | frisbie",
    "soccer": "soccer | football",
    "kite flying": "kite | kites",
    "horse riding": """riding ~ horse | rides ~ horse | ride ~ horse | on ~ horse | horseback | jockey |
        jockeys | riding ~ horses | on ~ horses | riding ~ pony""",
    "cycling": """riding ~ bike | rides ~ bike | ride ~ bike | riding ~ bicycle | rides ~ bicycle |
        on ~ bicycle | on ~ bike | riding ~ bikes | cyclist | cyclists | bicyclist | bicyclists |
        biking | cycling | pedaling""",
    "motorcycling": """motorcycle | motorcycles | motorbike | motorbikes | moped | mopeds | scooter |
        scooters | motorcyclist | motorcyclists | dirt bike | biker | bikers""",
    "riding": "riding | rides | ride | rider | riders",
    "video games": """wii | video game | video games | videogame | controller | controllers | gaming |
        nintendo | xbox | playstation | game ~ remote""",
    "eating": """eating | eats | eat | ate | bite | biting | dining | dine | having ~ lunch |
        having ~ dinner | having ~ breakfast | having ~ meal | enjoying ~ meal""",
    "drinking": "drinking | sipping | sips | toasting",
    "cooking": """cooking | cooks | cook | preparing | prepares | prepare | baking | chef | chefs |
        making ~ pizza | making ~ food | making ~ sandwich | cutting ~ cake""",
    "using a phone": """phone | phones | cellphone | cellphones | cell phone | telephone | smartphone |
        texting | selfie""",
    "using a computer": "laptop | laptops | computer | computers | typing | keyboard",
    "reading": "reading | reads | newspaper | magazine",
    "sleeping": "sleeping | sleeps | asleep | napping | nap",
    "swimming": "swimming | swims | swimmer | swimmers",
    "playing": "playing | plays | play | game",
    "walking": "walking | walks | walk | hiking | jogging | running | crossing",
    "sitting": "sitting | sits | seated | sit | siting | laying | lying",
    "standing": "standing | stands | stand | posing | poses | pose",
}
GENERIC_ACTIVITIES = ("playing", "walking", "sitting", "standing")  # new config activities rank above

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[,.;:!?()]")


def tokenize(caption: str) -> tuple[list[str], list[bool]]:
    """Lower-case words and punctuation, and which words were possessives ("man's" -> "man")."""
    tokens = _TOKEN.findall(caption.lower().replace("\u2019", "'"))
    possessive = [False] * len(tokens)
    for i, tok in enumerate(tokens):
        if tok.endswith("'s") or tok.endswith("'"):
            tokens[i] = tok.rsplit("'", 1)[0]
            possessive[i] = True
    return tokens, possessive


def plural_of(word: str) -> str:
    """English plural of a config word ("monk" -> "monks", "nanny" -> "nannies")."""
    if word.endswith("man"):
        return word[:-3] + "men"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _forms(text: str) -> list[tuple[str, str | None]]:
    out = []
    for item in text.split():
        singular, _, plural = item.partition("/")
        out.append((singular, plural or None))
    return out


def _words(text: str) -> set[str]:
    return {w for pair in _forms(text) for w in pair if w}


@dataclass(frozen=True, slots=True)
class PersonNoun:
    gender: str | None  # male/female/mixed (a couple)/None
    age: str | None     # child/teen/adult/elderly/None
    plural: bool
    count: int | None   # the noun's own head count: a couple 2, a crowd 3+


@dataclass(frozen=True, slots=True)
class Mention:
    """A real person, or several (`count`), that one caption talks about."""

    noun: str
    gender: str | None
    age: str | None
    count: float | None  # 1, 2, 3 (= MANY), BARE_PLURAL, or None (a hand: unknown)


@dataclass(frozen=True, slots=True)
class CaptionReading:
    mentions: tuple[Mention, ...]
    depicted: bool          # talks about a statue/doll/poster person and no real one
    activity: str | None

    @property
    def person(self) -> bool:
        return bool(self.mentions)

    @property
    def genders(self) -> set[str]:
        found = {m.gender for m in self.mentions if m.gender}
        if "mixed" in found:  # a couple
            found = (found - {"mixed"}) | {"male", "female"}
        return found

    @property
    def ages(self) -> set[str]:
        return {m.age for m in self.mentions if m.age}

    @property
    def count(self) -> float | None:
        """Head count: 1, 2, 3 (three or more), BARE_PLURAL (at least two) or None (unknown)."""
        counts = [m.count for m in self.mentions if m.count is not None]
        if not counts:
            return None
        exact = [c for c in counts if c != BARE_PLURAL]
        bare = len(counts) - len(exact)
        if not exact:
            return BARE_PLURAL if bare == 1 else MANY  # "men and women" are a group
        return min(sum(exact) + 2 * bare, MANY)

    @property
    def gender_reading(self) -> str:
        """male, female, mixed (both named) or neutral (no gendered word)."""
        found = self.genders
        if len(found) == 2:
            return "mixed"
        return found.pop() if found else "neutral"

    @property
    def age_reading(self) -> str:
        """The first of AGE_ORDER this caption names ("a man and a boy" reads child), else unspecified."""
        found = self.ages
        return next((a for a in AGE_ORDER if a in found), "unspecified")

    @property
    def group_reading(self) -> str:
        """single, pair or group (three or more, or an unnumbered plural); a hand alone is one person."""
        count = self.count
        if count is None or count == 1:
            return "single"
        return "pair" if count == 2 else "group"


@dataclass(frozen=True, slots=True)
class ImageLabels:
    people: bool
    gender: str
    age: str
    group: str
    activity: str
    n_person_captions: int
    n_captions: int


@dataclass
class _Draft:
    """A person mention while its caption is being read."""

    noun: str
    start: int          # first word of the noun phrase
    end: int            # the noun
    gender: str | None = None
    age: str | None = None
    count: float | None = None
    definite: bool = False
    depicted: bool = False
    body_part: bool = False


@dataclass(slots=True)
class _Phrase:
    """A person noun's phrase while it is walked back over ("the two young men")."""

    gender: str | None
    age: str | None
    count: float | None        # the noun's own count (a couple 2, a crowd 3+)
    age_mod: str | None = None  # young/old/child/teen/elderly/adult from a modifier
    number: float | None = None  # from a number word or quantifier ("two", "a group of")
    definite: bool = False
    depicted: bool = False
    start: int = 0             # the phrase's first word
    before: int = -1           # the word before it (moves back over "a group of")


class Lexicon:
    """The compiled word lists. `read` reads one caption, `label` one image's captions."""

    def __init__(self, extra_words: Mapping[str, Sequence[str]] | None = None,
                 extra_activities: Mapping[str, Sequence[str]] | None = None):
        extra = {k: list(v or ()) for k, v in (extra_words or {}).items()}
        unknown = sorted(set(extra) - set(CONFIG_LISTS))
        if unknown:
            raise ConfigError(f"data.people.words.{unknown[0]}: unknown word list "
                              f"(known: {', '.join(sorted(CONFIG_LISTS))}, activities)")
        self.nouns: dict[str, PersonNoun] = {}
        for key in PERSON_KEYS:
            gender, age = _gender_age_of(key)
            count = {"group": MANY, "mixed pair": 2}.get(key)
            for singular, plural in _forms(WORDS[key]):
                self._add_noun(singular, PersonNoun(gender, age, False, count))
                if plural:
                    self._add_noun(plural, PersonNoun(gender, age, True, count))
        for name, words in extra.items():
            if CONFIG_LISTS[name] not in PERSON_KEYS:
                continue
            gender, age = _gender_age_of(name)
            for word in words:
                word = _config_word(word, name)
                self._add_noun(word, PersonNoun(gender, age, False, None))
                self._add_noun(plural_of(word), PersonNoun(gender, age, True, None))

        def words(key: str, config_name: str | None = None) -> set[str]:
            found = _words(WORDS[key])
            for word in extra.get(config_name or "", ()):
                word = _config_word(word, config_name)
                found |= {word, plural_of(word)}
            return found

        self.collective = words("group") | words("mixed pair")
        self.acting_body_parts = words("acting body part")
        self.body_parts = words("body part")
        self.figures = words("figure", "figure")
        self.media = words("medium", "medium")
        self.depicters = self.figures | self.media
        self.figure_modifiers = words("figure modifier")
        self.frames = words("frame")
        self.animals = words("animal", "not_a_person_after")
        self.not_person_after = self.animals | words("not a person after")
        self.not_person_before = words("not a person before")
        self.negation = words("negation")
        self.activities = _compile_activities(ACTIVITIES, extra_activities or {})
        self.activity_rank = {name: rank for rank, (name, _) in enumerate(self.activities)}
        self._activity_index: dict[str, list[tuple[int, tuple]]] = {}
        for rank, (_, phrases) in enumerate(self.activities):
            for phrase in phrases:
                self._activity_index.setdefault(phrase[0][0], []).append((rank, phrase))

    @classmethod
    def from_config(cls, people_cfg: Mapping | None) -> "Lexicon":
        """The built-in lists extended by config `data.people.words`."""
        words = dict((people_cfg or {}).get("words") or {})
        activities = words.pop("activities", None) or {}
        return cls({k: v for k, v in words.items() if v}, activities)

    def _add_noun(self, word: str, noun: PersonNoun) -> None:
        old = self.nouns.get(word)
        if old is not None:  # a word in two lists (male + adult) carries both facts
            noun = PersonNoun(noun.gender or old.gender, noun.age or old.age, noun.plural and old.plural,
                              noun.count or old.count)
        self.nouns[word] = noun

    # ---- one caption ----------------------------------------------------------------------
    def read(self, caption: str) -> CaptionReading:
        tokens, possessive = tokenize(caption)
        for i, tok in enumerate(tokens):
            if tok in BARE_POSSESSIVES and i + 1 < len(tokens) and tokens[i + 1] not in BREAKERS:
                tokens[i] = tok[:-1]
                possessive[i] = True
        drafts: list[_Draft] = []
        depicted_any = False
        depicted_end = -9  # the last depicted mention: "a statue of a man and a woman" is two statues
        for i, tok in enumerate(tokens):
            noun = self.nouns.get(tok)
            if noun is None:
                if tok in self.acting_body_parts and not possessive[i] and _acts(tokens, i):
                    drafts.append(_Draft(tok, i, i, body_part=True))
                continue
            draft = self._mention_at(tokens, possessive, i, noun, drafts)
            if draft is None:
                if i + 1 < len(tokens) and tokens[i + 1] in self.not_person_after and drafts \
                        and drafts[-1].end == i - 2 and tokens[i - 1] == "and":
                    drafts.pop()  # "a boy and girl teddy bear"
                continue
            if not draft.depicted and draft.start >= 2 and tokens[draft.start - 1] in ("and", "or") \
                    and draft.start - 2 == depicted_end:
                draft.depicted = True
            if draft.depicted:
                depicted_any = True
                depicted_end = draft.end
                continue
            drafts.append(draft)
        if drafts and not drafts[-1].body_part:
            for k in range(drafts[-1].end + 1, len(tokens)):
                if tokens[k] == "another" and (k + 1 == len(tokens) or tokens[k + 1] in BREAKERS
                                               or tokens[k + 1].endswith("ing")):
                    drafts.append(_Draft("another", k, k, count=1))  # "a person ... and another trying"
                    break
        mentions = self._resolve(tokens, drafts)
        if not mentions and not depicted_any:
            depicted_any = any(t in self.figures for t in tokens)  # "a statue holding a newspaper"
        return CaptionReading(mentions, depicted_any and not mentions, self._activity(tokens))

    def _mention_at(self, tokens: list[str], possessive: list[bool], i: int, noun: PersonNoun,
                    drafts: list[_Draft]) -> _Draft | None:
        """The person mention whose noun is tokens[i], or None when it is not a real person."""
        tok = tokens[i]
        if not self._person_word_here(tokens, possessive, i):
            return None
        if i + 1 < len(tokens) and tokens[i + 1] in self.figures:
            return _Draft(tok, i, i, depicted=True)  # "a woman mannequin", "people figurines"
        phrase = self._noun_phrase(tokens, possessive, i, noun, drafts)
        if phrase is None:
            return None
        drafts[:] = [d for d in drafts if not phrase.start <= d.end < i]  # "a teen boy" is one person
        if not self._quantify(tokens, phrase) or not self._real_in_context(tokens, tok, phrase):
            return None
        if _on_screen_after(tokens, i):
            phrase.depicted = True  # "a tennis player on TV"
        j = phrase.before
        if tok in BEHIND_CAMERA and phrase.definite:
            return None
        if tok in NOT_A_PERSON_IN and j >= 0 and tokens[j] in ("in", "into"):
            return None
        age = _combine_age(phrase.age, phrase.age_mod)
        count = phrase.count
        if count is None:
            count = phrase.number if phrase.number is not None else (BARE_PLURAL if noun.plural else 1)
        elif noun.count == 2 and phrase.number is not None and phrase.number >= 2:
            count = MANY  # "two couples"
        return _Draft(tok, phrase.start, i, phrase.gender, age, count, definite=phrase.definite,
                      depicted=phrase.depicted)

    def _person_word_here(self, tokens: list[str], possessive: list[bool], i: int) -> bool:
        """Is the person noun at tokens[i] a person here at all ("a pitcher of water" is not)?"""
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        prev = tokens[i - 1] if i else ""
        if tok in NEEDS_CONTEXT and (nxt == "of" or not SPORTS_CONTEXT.intersection(tokens)):
            return False  # "a pitcher of water"
        if tok in NOUN_AFTER_DETERMINER and prev not in DETERMINERS and prev not in NUMBER_WORDS \
                and prev not in AGE_MODIFIERS and prev not in ("head", "line"):
            return False  # "while they cook", "coach bus"
        if tok in self.collective and nxt == "of":
            return False  # "a couple of", "a family of giraffes": the next noun phrase decides
        if tok in AMBIGUOUS_COLLECTIVES and not (nxt in BREAKERS or not nxt or nxt.endswith("ing")
                                                 or nxt in self.nouns):
            return False  # "a couple purple flowers", "a group photo"
        if not possessive[i]:
            return nxt not in self.not_person_after  # "passenger train", "baby elephant", "police car"
        return nxt in self.body_parts  # "a man's face"; "a man's urinal" is owned, not shown

    def _noun_phrase(self, tokens: list[str], possessive: list[bool], i: int, noun: PersonNoun,
                     drafts: list[_Draft]) -> _Phrase | None:
        """Walk back from the noun at tokens[i] over its noun phrase ("the two young men"), merging
        an earlier noun of the same phrase ("a woman tennis player"); None: "no people"."""
        tok = tokens[i]
        p = _Phrase(noun.gender, noun.age, noun.count)
        seen_determiner = False
        j = i - 1
        unknown_words = 0
        while j >= 0:
            t = tokens[j]
            if t in self.negation or (t == "it" and possessive[j]):
                return None  # "no people", "not many passengers"; "it's mother" (sic) is an animal's
            if t.isdigit():
                p.number = p.number or min(int(t), MANY) or None
                seen_determiner = True
            elif t in NUMBER_WORDS:
                if p.number is None or t not in ("a", "an"):  # "a few people" are a few
                    p.number = NUMBER_WORDS[t]
                seen_determiner = True
            elif t in DETERMINERS:
                if t == "its":
                    return None  # "its mother": an animal's
                p.definite = p.definite or t in ARTICLES
                seen_determiner = True
            elif seen_determiner or t in BREAKERS or possessive[j]:
                break
            elif j >= 1 and (tokens[j - 1], t) in AGE_PHRASES:
                p.age_mod = AGE_PHRASES[(tokens[j - 1], t)]
                j -= 1
            elif t in ("year", "years", "month", "months") and j + 1 < i and tokens[j + 1] == "old":
                years = _years(tokens[j - 1]) if j >= 1 else None
                if years is not None:  # "a 3 year old boy", "a two year old"
                    p.age_mod = _age_of_years(years if t.startswith("year") else 0)
                    j -= 1
            elif t in AGE_MODIFIERS:
                after_years = t == "old" and j >= 1 and tokens[j - 1] in ("year", "years", "month", "months")
                if p.age_mod is None and not after_years:
                    p.age_mod = AGE_MODIFIERS[t]
            elif t in GENDER_MODIFIERS and t not in self.nouns:
                p.gender = p.gender or GENDER_MODIFIERS[t]
            elif t in self.figure_modifiers:
                p.depicted = True
            elif t in self.not_person_before and tok in ("player", "players", "fans", "man", "men"):
                return None  # "a dvd player", "ceiling fans", "spider man"
            elif t in self.nouns:
                # "a woman tennis player", "a male skier", "a couple skiers": one mention
                inner = self.nouns[t]
                p.gender, p.age = p.gender or inner.gender, p.age or inner.age
                p.count = p.count or inner.count
                earlier = next((d for d in reversed(drafts) if d.end == j), None)
                if earlier is not None:
                    drafts.remove(earlier)
                    p.gender, p.age = p.gender or earlier.gender, p.age or earlier.age
                    p.number, p.definite = earlier.count, earlier.definite
                    j = earlier.start - 1
                    break
            elif t.endswith(("ing", "ed")) and t not in NOT_VERBS:
                break  # "a dog watching people"
            else:
                unknown_words += 1  # adjectives: "a tall skinny man", "a baseball player"
                if unknown_words > 3:
                    break
            j -= 1
        p.start, p.before = j + 1, j
        return p

    def _quantify(self, tokens: list[str], p: _Phrase) -> bool:
        """What comes before the noun phrase: "a group of", "a statue of", "a photo of"; moves
        `p.before` back over quantifiers. False: "empty of people"."""
        j = p.before
        while j >= 1 and tokens[j] == "of":
            q = j - 1
            while q >= 0 and (tokens[q] in QUANTIFIER_ADJECTIVES or tokens[q] in AGE_MODIFIERS):
                q -= 1
            head = tokens[q] if q >= 0 else ""
            if head in ("empty", "devoid", "free", "void", "absent"):
                return False  # "empty of people"
            if head in QUANTIFIERS:
                if p.number is None or p.number == 1:
                    p.number = QUANTIFIERS[head]
                j = q - 1  # "a photo of a group of people": look further back
                while j >= 0 and (tokens[j] in NUMBER_WORDS or tokens[j] in DETERMINERS):
                    j -= 1
                continue
            if head in self.figures or head in self.media:
                p.depicted = True
            elif head in self.frames and not _frames_the_photo(tokens, q, self):
                p.depicted = True
            elif head in ("one", "none", "each", "either", "neither"):
                p.number = 1
            break
        p.before = j
        return True

    def _real_in_context(self, tokens: list[str], tok: str, p: _Phrase) -> bool:
        """The word before the phrase: a depiction ("a poster with a woman"), or nobody at all
        ("without people", "a bus waiting for people") -> False."""
        j = p.before
        if j >= 1 and tokens[j] in DEPICT_LINKS and tokens[j - 1] in self.depicters:
            p.depicted = True  # "a poster with a woman on it", "a television showing two men"
        elif j >= 1 and tokens[j] in ("like", "as") and tokens[j - 1] in RESEMBLE_VERBS:
            p.depicted = True  # "a cake shaped like a man", "a dog dressed as a person"
        elif j >= 0 and tokens[j] in self.negation:
            return False  # "without people"
        elif j >= 1 and (tokens[j - 1], tokens[j]) in ABSENT_AFTER:
            return False  # "a bus waiting for people"
        elif j >= 0 and tokens[j] == "for" and tok in ("passenger", "passengers", "customer", "customers"):
            return False  # "a bus stopped for passengers"
        elif j >= 0 and tokens[j] in CARRY_VERBS and tok in ("passenger", "passengers", "people"):
            return False  # "a jet carrying passengers"
        return True

    def _resolve(self, tokens: list[str], drafts: list[_Draft]) -> tuple[Mention, ...]:
        kept: list[_Draft] = []
        for d in drafts:
            if d.definite and any(k.noun == d.noun for k in kept):
                continue  # "a man ... the man": one person
            if d.body_part and (kept or any(not k.body_part for k in drafts)):
                continue  # "a man ... his hand", "a hand ... someone's"
            kept.append(d)
        animals = not self.animals.isdisjoint(tokens)
        first = kept[0].start if kept else len(tokens)
        subject = {t for k, t in enumerate(tokens[:first])
                   if t in ("he", "she") and tokens[k + 1:k + 2] != ["who"]}  # not "he who laughs last"
        if len(subject) == 1 and not animals:
            # "She is holding an umbrella", "He was holding the baby": a person of their own
            pronoun = subject.pop()
            kept.insert(0, _Draft(pronoun, 0, 0, GENDER_PRONOUNS[pronoun], None, 1))
        elif not animals and not any(d.gender for d in kept):
            one = [d for d in kept if d.count == 1]
            pronouns = {GENDER_PRONOUNS[t] for t in tokens if t in GENDER_PRONOUNS}
            if len(one) == 1 and len(pronouns) == 1:  # "a surfer on his board", "a crowd behind him"
                one[0].gender = pronouns.pop()
        return tuple(Mention(d.noun, d.gender, d.age, d.count) for d in kept)

    def _activity(self, tokens: list[str]) -> str | None:
        best: int | None = None
        n = len(tokens)
        for i, tok in enumerate(tokens):
            for rank, phrase in self._activity_index.get(tok, ()):
                if (best is None or rank < best) and _phrase_at(tokens, i, n, phrase):
                    best = rank
        return self.activities[best][0] if best is not None else None

    # ---- one image --------------------------------------------------------------------------
    def label(self, captions: Iterable[str]) -> ImageLabels:
        return label_image([self.read(c) for c in captions], self.activity_rank)


def _gender_age_of(key: str) -> tuple[str | None, str | None]:
    tags = key.split()
    gender = next((t for t in tags if t in ("male", "female", "mixed")), None)
    age = next((t for t in tags if t in ("child", "teen", "adult", "elderly")), None)
    return gender, age


def _config_word(word: object, name: str | None) -> str:
    text = str(word).strip().lower()
    if not text or not re.fullmatch(r"[a-z0-9]+(?:'[a-z]+)?", text):
        raise ConfigError(f"data.people.words.{name}: {word!r} is not a single lower-case word")
    return text


def _acts(tokens: list[str], i: int) -> bool:
    """'a hand holding a cup', 'hands are cutting a cake': a body part doing something."""
    k = i + 1
    if k < len(tokens) and tokens[k] in ("that", "which"):
        k += 1  # "a hand that is holding a cup"
    if k < len(tokens) and tokens[k] in ("is", "are"):
        k += 1
    nxt = tokens[k] if k < len(tokens) else ""
    if i and tokens[i - 1] in ("with", "of", "in", "on", "by"):
        return False  # "a cat with paws", "a man on one hand"
    return (nxt.endswith("ing") and nxt not in NOT_VERBS) or nxt in (
        "holds", "reaches", "grabs", "touches", "points", "uses", "cuts", "pours", "picks", "takes",
        "pets", "feeds", "opens", "presses", "types")


def _on_screen_after(tokens: list[str], i: int) -> bool:
    """'a tennis player on TV', 'a man in a painting': the noun at i is shown on a screen or print."""
    if i + 2 >= len(tokens) or tokens[i + 1] not in ("on", "in"):
        return False
    k = i + 3 if tokens[i + 2] in ("a", "an", "the", "this", "that") else i + 2
    return k < len(tokens) and tokens[k] in ON_SCREEN


def _frames_the_photo(tokens: list[str], q: int, lexicon: "Lexicon") -> bool:
    """Is the framing word at q the photo itself ("a black and white photo of ...") rather than a
    picture inside it ("a man holding a picture of a woman", "a photo on the wall of a man")?"""
    before = tokens[:q]
    if any(t in TAKE_VERBS for t in before[-3:]):
        return True  # "taking a picture of people": the people are real
    for k, t in enumerate(before):
        if t in HOLDS_A_PICTURE or t in lexicon.nouns or t in lexicon.depicters:
            return False
        if t in lexicon.frames and k + 1 < len(tokens) and tokens[k + 1] == "of":
            return False  # "an image of a photo of a man"
    return True


def _years(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return YEAR_WORDS.get(word)


def _age_of_years(years: int) -> str:
    if years <= 12:
        return "child"
    if years <= 19:
        return "teen"
    return "adult" if years < 65 else "elderly"


def _combine_age(noun_age: str | None, modifier: str | None) -> str | None:
    """A noun's age with its modifier: young boy child, young man adult, old man elderly."""
    if modifier is None or modifier == "young":
        return noun_age  # "a young person" says nothing definite
    if modifier == "old":
        return noun_age if noun_age in ("child", "teen") else "elderly"  # "an older boy" is a boy
    if modifier == "child":
        return "child" if noun_age in (None, "child", "adult") else noun_age  # "a little man"
    if modifier == "elderly":
        return noun_age if noun_age == "child" else "elderly"
    if modifier == "adult":
        return noun_age or "adult"
    return modifier  # teen


def _compile_activities(base: Mapping[str, str], extra: Mapping[str, Sequence[str]]
                        ) -> list[tuple[str, list[tuple[tuple[str, ...], ...]]]]:
    """[(activity, [phrase, ...])] in rank order; a phrase is a tuple of word tuples, each part
    after the first within four words of the previous one."""
    compiled = [(name, [_phrase(p) for p in text.split("|") if p.strip()]) for name, text in base.items()]
    for name, phrases in extra.items():
        if not isinstance(phrases, (list, tuple)):
            raise ConfigError(f"data.people.words.activities.{name}: expected a list of phrases")
        parsed = [_phrase(p) for p in phrases if str(p).strip()]
        names = [n for n, _ in compiled]
        if name in names:
            compiled[names.index(name)][1].extend(parsed)
        else:  # a new activity ranks above the generic ones (playing, walking, sitting, standing)
            compiled.insert(names.index(GENERIC_ACTIVITIES[0]), (name, parsed))
    return compiled


def _phrase(text: str) -> tuple[tuple[str, ...], ...]:
    parts = tuple(tuple(part.lower().split()) for part in str(text).split("~"))
    if not all(parts):
        raise ConfigError(f"data.people.words.activities: {text!r} has an empty part around '~'")
    return parts


def _phrase_at(tokens: list[str], i: int, n: int, phrase: tuple[tuple[str, ...], ...]) -> bool:
    first = phrase[0]
    if len(first) > 1 and tuple(tokens[i:i + len(first)]) != first:
        return False
    pos = i + len(first)
    for part in phrase[1:]:
        for k in range(pos, min(pos + 4, n)):
            if tuple(tokens[k:k + len(part)]) == part:
                pos = k + len(part)
                break
        else:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# One image from its captions' readings.
# ---------------------------------------------------------------------------------------------
def label_image(readings: Sequence[CaptionReading], activity_rank: Mapping[str, int] | None = None
                ) -> ImageLabels:
    persons = [r for r in readings if r.person]
    depicted = sum(1 for r in readings if r.depicted)
    if not persons or len(persons) < depicted:
        return ImageLabels(False, "neutral", "unspecified", "single", NO_ACTIVITY, len(persons), len(readings))
    group = _group(persons)
    return ImageLabels(True, _gender(persons, group), _age(persons), group,
                       _activity(persons, activity_rank), len(persons), len(readings))


def _most_frequent(readings: Iterable[str]) -> list[str]:
    """The readings with the most votes (several on a tie)."""
    votes: dict[str, int] = {}
    for r in readings:
        votes[r] = votes.get(r, 0) + 1
    top = max(votes.values())
    return [r for r, v in votes.items() if v == top]


def _gender(persons: Sequence[CaptionReading], group: str) -> str:
    """Majority reading; ties: a specific reading beats neutral, and male against female (or
    mixed) is neutral for one person and mixed for several."""
    tied = _most_frequent(r.gender_reading for r in persons)
    specific = [g for g in tied if g != "neutral"]
    if not specific:
        return "neutral"
    if len(specific) == 1:
        return specific[0]
    return "neutral" if group == "single" else "mixed"


def _age(persons: Sequence[CaptionReading]) -> str:
    """Majority reading; ties: a specific age beats unspecified, then the first of AGE_ORDER."""
    tied = _most_frequent(r.age_reading for r in persons)
    return next((a for a in AGE_ORDER if a in tied), "unspecified")


def _group(persons: Sequence[CaptionReading]) -> str:
    """Majority reading; ties: the larger head count, where an unnumbered plural ("people") is
    consistent with an explicit "two" (pair) and larger than one."""
    tied = _most_frequent(r.group_reading for r in persons)
    if "group" in tied and "pair" in tied \
            and all(r.count == BARE_PLURAL for r in persons if r.group_reading == "group"):
        return "pair"  # "two surfers" twice, "people surfing" twice
    return next(g for g in ("group", "pair", "single") if g in tied)


def _activity(persons: Sequence[CaptionReading], rank: Mapping[str, int] | None) -> str:
    votes: dict[str, int] = {}
    for r in persons:
        if r.activity:
            votes[r.activity] = votes.get(r.activity, 0) + 1
    if not votes:
        return OTHER_ACTIVITY
    rank = rank if rank is not None else {name: k for k, name in enumerate(ACTIVITIES)}
    return min(votes, key=lambda a: (-votes[a], rank.get(a, len(rank))))


_DEFAULT: Lexicon | None = None


def default_lexicon() -> Lexicon:
    """The built-in word lists (compiled once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Lexicon()
    return _DEFAULT


def label_captions(captions: Iterable[str], lexicon: Lexicon | None = None) -> ImageLabels:
    """Labels of one image from all its captions."""
    return (lexicon or default_lexicon()).label(captions)
