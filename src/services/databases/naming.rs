//! The GraphQL names of a collection: `Blog posts` becomes the type `BlogPost`,
//! the fields `blogPost` and `blogPosts`, and every type and root field derived
//! from them (`BlogPostFilter`, `createBlogPost`, …). Names are checked against
//! the core schema and the project's other collections when a collection is
//! created, so a clash is refused then, never found while building a schema.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, codes};

/// The names of one collection's GraphQL surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphqlNames {
    /// The object type, e.g. `Post`.
    pub type_name: String,
    /// The by-id query, e.g. `post`.
    pub single: String,
    /// The list query, e.g. `posts`.
    pub plural: String,
}

fn invalid(reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_GRAPHQL_NAME,
        field: "graphqlName".into(),
        reason: reason.into(),
    }
}

/// The words of a name: runs of ASCII letters and digits, split at other
/// characters and at lower-to-upper case changes (`blogPosts` → blog, Posts).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => {
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        }
        None => String::new(),
    }
}

/// Words whose plural is the word itself: their list field is `<name>List`.
const UNCOUNTABLE: &[&str] = &[
    "advice",
    "aircraft",
    "analytics",
    "baggage",
    "data",
    "deer",
    "equipment",
    "feedback",
    "fish",
    "furniture",
    "hardware",
    "information",
    "knowledge",
    "luggage",
    "media",
    "metadata",
    "moose",
    "money",
    "music",
    "news",
    "offspring",
    "police",
    "progress",
    "research",
    "rice",
    "series",
    "sheep",
    "software",
    "species",
    "staff",
    "traffic",
];

/// Plurals no suffix rule makes, as (singular, plural).
const IRREGULAR: &[(&str, &str)] = &[
    ("alias", "aliases"),
    ("analysis", "analyses"),
    ("appendix", "appendices"),
    ("atlas", "atlases"),
    ("axis", "axes"),
    ("basis", "bases"),
    ("bias", "biases"),
    ("cactus", "cacti"),
    ("calf", "calves"),
    ("canvas", "canvases"),
    ("child", "children"),
    ("crisis", "crises"),
    ("criterion", "criteria"),
    ("diagnosis", "diagnoses"),
    ("dwarf", "dwarves"),
    ("elf", "elves"),
    ("foot", "feet"),
    ("fungus", "fungi"),
    ("gas", "gases"),
    ("goose", "geese"),
    ("half", "halves"),
    ("hoof", "hooves"),
    ("hypothesis", "hypotheses"),
    ("knife", "knives"),
    ("leaf", "leaves"),
    ("lens", "lenses"),
    ("life", "lives"),
    ("loaf", "loaves"),
    ("louse", "lice"),
    ("man", "men"),
    ("matrix", "matrices"),
    ("mouse", "mice"),
    ("oasis", "oases"),
    ("ox", "oxen"),
    ("parenthesis", "parentheses"),
    ("person", "people"),
    ("phenomenon", "phenomena"),
    ("quiz", "quizzes"),
    ("radius", "radii"),
    ("scarf", "scarves"),
    ("self", "selves"),
    ("shelf", "shelves"),
    ("stimulus", "stimuli"),
    ("synopsis", "synopses"),
    ("synthesis", "syntheses"),
    ("thesis", "theses"),
    ("thief", "thieves"),
    ("tooth", "teeth"),
    ("vertex", "vertices"),
    ("vortex", "vortices"),
    ("wharf", "wharves"),
    ("wife", "wives"),
    ("wolf", "wolves"),
    ("woman", "women"),
];

/// Plurals that the suffix rules would read the wrong way, as (singular,
/// plural): `indices` names an index, but an index's plural is `indexes`.
const SINGULAR_ONLY: &[(&str, &str)] = &[("index", "indices")];

/// Singulars in `-ie`, whose plural (`-ies`) is not a `-y` word's.
const IE_WORDS: &[&str] = &[
    "auntie", "beanie", "birdie", "bookie", "brownie", "calorie", "collie", "cookie", "cutie",
    "die", "foodie", "freebie", "genie", "goalie", "hoodie", "junkie", "lie", "movie", "newbie",
    "pie", "pixie", "prairie", "rookie", "selfie", "smoothie", "sortie", "techie", "tie", "veggie",
    "zombie",
];

/// Singulars in `-o` whose plural takes `-es`.
const O_ES_WORDS: &[&str] = &[
    "echo", "embargo", "hero", "mosquito", "potato", "tomato", "torpedo", "veto",
];

/// Singulars in `-oe`, `-che` and `-use`, whose plural only adds `-s` though
/// it looks like an `-es` one.
const E_WORDS: &[&str] = &[
    "abuse",
    "ache",
    "avalanche",
    "blouse",
    "cache",
    "canoe",
    "cause",
    "clause",
    "cliche",
    "douse",
    "excuse",
    "foe",
    "fuse",
    "headache",
    "hoe",
    "house",
    "misuse",
    "moustache",
    "muse",
    "mustache",
    "niche",
    "oboe",
    "pause",
    "refuse",
    "reuse",
    "shoe",
    "spouse",
    "toe",
];

/// Words in `-man` whose plural is `-mans`.
const NOT_MAN_WORDS: &[&str] = &[
    "caiman", "cayman", "doberman", "german", "human", "ottoman", "roman", "shaman", "talisman",
];

/// Singular words in `-men` that are not plurals of a `-man` word.
const MEN_SINGULARS: &[&str] = &[
    "abdomen", "acumen", "albumen", "amen", "hymen", "lumen", "omen", "ramen", "regimen", "semen",
    "specimen", "stamen", "yemen",
];

/// Table words that end other words they are not the last part of
/// (`databases`, `olives`, `wildlife`): they match whole words only.
const WHOLE_ONLY: &[&str] = &[
    "axes", "axis", "bases", "lice", "life", "lives", "mice", "self",
];

/// The tail of `word` matching a table entry's `from`, replaced by its `to`:
/// whole words, and the last part of compounds (`grandchildren` →
/// `grandchild`) for entries of 4 letters or more.
fn by_table<'a>(word: &str, table: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    table
        .filter(|(from, _)| {
            word == *from || (from.len() >= 4 && !WHOLE_ONLY.contains(from) && word.ends_with(from))
        })
        .max_by_key(|(from, _)| from.len())
        .map(|(from, to)| format!("{}{to}", &word[..word.len() - from.len()]))
}

/// Whether `word` is `stem` + `suffix`, or ends so with a stem long enough not
/// to end unrelated words (`tie` ends `parties`).
fn ends_with_stem(word: &str, stems: &[&str], suffix: &str) -> bool {
    word.strip_suffix(suffix).is_some_and(|base| {
        stems
            .iter()
            .any(|stem| base == *stem || (stem.len() >= 4 && base.ends_with(stem)))
    })
}

/// English singular of a plural word (`posts`, `categories`, `people`,
/// `analyses`), lowercase; a word that does not look plural stays as it is.
fn singular(word: &str) -> String {
    let w = word.to_ascii_lowercase();
    if UNCOUNTABLE.contains(&w.as_str()) {
        return w;
    }
    let irregular = IRREGULAR
        .iter()
        .chain(SINGULAR_ONLY)
        .map(|(one, many)| (*many, *one));
    if let Some(found) = by_table(&w, irregular) {
        return found;
    }
    // A singular of the tables, or of a compound ending in one, stays.
    if IRREGULAR.iter().any(|(one, _)| {
        w == *one || (one.len() >= 4 && !WHOLE_ONLY.contains(one) && w.ends_with(one))
    }) {
        return w;
    }
    let cut = |n: usize| w[..w.len() - n].to_string();
    if w.ends_with("men") && w.len() > 3 && !MEN_SINGULARS.iter().any(|m| w.ends_with(m)) {
        return format!("{}man", &w[..w.len() - 3]);
    }
    if !w.ends_with('s') || w.len() < 3 {
        return w;
    }
    if let Some(stem) = w.strip_suffix("ies") {
        if ends_with_stem(&w, IE_WORDS, "s") || stem.len() < 2 {
            return cut(1);
        }
        return format!("{stem}y");
    }
    if ends_with_stem(&w, E_WORDS, "s") || w == "uses" {
        return cut(1);
    }
    for suffix in ["sses", "xes", "ches", "shes", "zzes", "uses", "oes"] {
        if w.ends_with(suffix) {
            return cut(2);
        }
    }
    if w.ends_with("yses") {
        return format!("{}is", cut(2));
    }
    if w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
        return w;
    }
    cut(1)
}

/// English plural of a singular word, lowercase.
fn plural(word: &str) -> String {
    let w = word.to_ascii_lowercase();
    if UNCOUNTABLE.contains(&w.as_str()) {
        return w;
    }
    if let Some(found) = by_table(&w, IRREGULAR.iter().copied()) {
        return found;
    }
    let ends_consonant_y =
        w.ends_with('y') && w.len() >= 2 && !"aeiou".contains(w.as_bytes()[w.len() - 2] as char);
    let man_word = w.ends_with("man") && !NOT_MAN_WORDS.iter().any(|n| w.ends_with(n));
    if ends_consonant_y {
        format!("{}ies", &w[..w.len() - 1])
    } else if man_word {
        format!("{}men", &w[..w.len() - 3])
    } else if O_ES_WORDS.iter().any(|o| w.ends_with(o))
        || ["s", "x", "z", "ch", "sh"].iter().any(|s| w.ends_with(s))
    {
        format!("{w}es")
    } else {
        format!("{w}s")
    }
}

fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

impl GraphqlNames {
    /// The names for a collection called `name`, or for the type name the user
    /// chose (`graphqlName`, e.g. `Post`).
    pub fn derive(name: &str, chosen: Option<&str>) -> AppResult<GraphqlNames> {
        let base = chosen.unwrap_or(name);
        let mut parts = words(base);
        if chosen.is_none()
            && let Some(last) = parts.last_mut()
        {
            *last = singular(last);
        }
        let type_name: String = parts.iter().map(|w| capitalized(w)).collect();
        if type_name.is_empty() || type_name.as_bytes()[0].is_ascii_digit() {
            return Err(invalid(format!(
                "no GraphQL type name can be made from `{}`; give `graphqlName` (e.g. `Post`)",
                base.chars().take(64).collect::<String>()
            )));
        }
        if type_name.len() > 48 {
            return Err(invalid(
                "the GraphQL type name would be longer than 48 characters; give a shorter `graphqlName`",
            ));
        }
        let single = lower_first(&type_name);
        let mut plural_name = lower_first(&{
            let mut parts = parts.clone();
            if let Some(last) = parts.last_mut() {
                *last = plural(last);
            }
            parts.iter().map(|w| capitalized(w)).collect::<String>()
        });
        if plural_name == single {
            plural_name = format!("{single}List");
        }
        Ok(GraphqlNames {
            type_name,
            single,
            plural: plural_name,
        })
    }

    /// Every type name the collection adds to the schema.
    pub fn type_names(&self) -> Vec<String> {
        let t = &self.type_name;
        [
            t.clone(),
            format!("{t}Connection"),
            format!("{t}Edge"),
            format!("{t}Filter"),
            format!("{t}OrderBy"),
            format!("Create{t}Input"),
            format!("Update{t}Input"),
            format!("Upsert{t}Input"),
            format!("Increment{t}Input"),
            format!("Decrement{t}Input"),
            format!("{t}NumericField"),
            format!("Delete{t}Input"),
            format!("Delete{t}Payload"),
            format!("Delete{}Input", capitalized_first(&self.plural)),
            format!("Delete{}Payload", capitalized_first(&self.plural)),
            format!("{t}Event"),
            format!("{t}Field"),
        ]
        .into()
    }

    /// Every root field the collection adds to the schema.
    pub fn root_fields(&self) -> Vec<String> {
        let t = &self.type_name;
        let p = capitalized_first(&self.plural);
        [
            self.single.clone(),
            self.plural.clone(),
            format!("create{t}"),
            format!("create{p}"),
            format!("update{t}"),
            format!("upsert{t}"),
            format!("increment{t}"),
            format!("decrement{t}"),
            format!("update{p}"),
            format!("delete{t}"),
            format!("delete{p}"),
            format!("{}Changed", self.single),
        ]
        .into()
    }

    /// Refuses names that the core schema (`core`, its type and root field names)
    /// or another collection (`others`) uses.
    pub fn check_free<'a>(
        &self,
        core: &HashSet<String>,
        others: impl IntoIterator<Item = &'a GraphqlNames>,
    ) -> AppResult<()> {
        let mine_types = self.type_names();
        let mine_fields = self.root_fields();
        let clash = |name: &str| {
            Err(AppError::Invalid {
                code: codes::GRAPHQL_NAME_TAKEN,
                field: "graphqlName".into(),
                reason: format!(
                    "the collection's GraphQL names would clash with `{name}`; choose another `graphqlName`"
                ),
            })
        };
        for name in mine_types.iter().chain(&mine_fields) {
            if core.contains(name.as_str()) || name.starts_with("__") {
                return clash(name);
            }
        }
        for other in others {
            let theirs: HashSet<String> = other
                .type_names()
                .into_iter()
                .chain(other.root_fields())
                .collect();
            if let Some(name) = mine_types
                .iter()
                .chain(&mine_fields)
                .find(|n| theirs.contains(*n))
            {
                return clash(name);
            }
        }
        Ok(())
    }
}

fn capitalized_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(name: &str, chosen: Option<&str>) -> (String, String, String) {
        let n = GraphqlNames::derive(name, chosen).unwrap();
        (n.type_name, n.single, n.plural)
    }

    #[test]
    fn names_come_from_the_collection_name() {
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(names("posts", None), s("Post", "post", "posts"));
        assert_eq!(
            names("Blog posts", None),
            s("BlogPost", "blogPost", "blogPosts")
        );
        assert_eq!(
            names("categories", None),
            s("Category", "category", "categories")
        );
        assert_eq!(names("boxes", None), s("Box", "box", "boxes"));
        assert_eq!(names("status", None), s("Status", "status", "statuses"));
        assert_eq!(
            names("user_profiles", None),
            s("UserProfile", "userProfile", "userProfiles")
        );
        assert_eq!(names("person", None), s("Person", "person", "people"));
        assert_eq!(
            names("whatever", Some("Article")),
            s("Article", "article", "articles")
        );
    }

    #[test]
    fn plural_nouns_become_their_english_singular_and_back() {
        // (collection name, type name, list field)
        let cases = [
            ("Posts", "Post", "posts"),
            ("Movies", "Movie", "movies"),
            ("Categories", "Category", "categories"),
            ("Statuses", "Status", "statuses"),
            ("Addresses", "Address", "addresses"),
            ("People", "Person", "people"),
            ("Boxes", "Box", "boxes"),
            ("Heroes", "Hero", "heroes"),
            ("Wolves", "Wolf", "wolves"),
            ("Series", "Series", "seriesList"),
            ("News", "News", "newsList"),
            ("Analyses", "Analysis", "analyses"),
            ("Quizzes", "Quiz", "quizzes"),
            ("Indices", "Index", "indexes"),
            ("Children", "Child", "children"),
            ("Cookies", "Cookie", "cookies"),
            ("Parties", "Party", "parties"),
            ("Families", "Family", "families"),
            ("Companies", "Company", "companies"),
            ("Days", "Day", "days"),
            ("Keys", "Key", "keys"),
            ("Databases", "Database", "databases"),
            ("Cases", "Case", "cases"),
            ("Courses", "Course", "courses"),
            ("Responses", "Response", "responses"),
            ("Houses", "House", "houses"),
            ("Warehouses", "Warehouse", "warehouses"),
            ("Buses", "Bus", "buses"),
            ("Viruses", "Virus", "viruses"),
            ("Classes", "Class", "classes"),
            ("Taxes", "Tax", "taxes"),
            ("Slices", "Slice", "slices"),
            ("Axes", "Axis", "axes"),
            ("Matches", "Match", "matches"),
            ("Dishes", "Dish", "dishes"),
            ("Caches", "Cache", "caches"),
            ("Potatoes", "Potato", "potatoes"),
            ("Photos", "Photo", "photos"),
            ("Videos", "Video", "videos"),
            ("Shoes", "Shoe", "shoes"),
            ("Knives", "Knife", "knives"),
            ("Leaves", "Leaf", "leaves"),
            ("Shelves", "Shelf", "shelves"),
            ("Archives", "Archive", "archives"),
            ("Olives", "Olive", "olives"),
            ("Men", "Man", "men"),
            ("Women", "Woman", "women"),
            ("Salesmen", "Salesman", "salesmen"),
            ("Humans", "Human", "humans"),
            ("Mice", "Mouse", "mice"),
            ("Teeth", "Tooth", "teeth"),
            ("Feet", "Foot", "feet"),
            ("Geese", "Goose", "geese"),
            ("Criteria", "Criterion", "criteria"),
            ("Crises", "Crisis", "crises"),
            ("Matrices", "Matrix", "matrices"),
            ("Prices", "Price", "prices"),
            ("Devices", "Device", "devices"),
            ("Sizes", "Size", "sizes"),
            ("Specimens", "Specimen", "specimens"),
            ("Species", "Species", "speciesList"),
            ("Grandchildren", "Grandchild", "grandchildren"),
            ("Users profiles", "UsersProfile", "usersProfiles"),
            ("order_items", "OrderItem", "orderItems"),
            ("Data", "Data", "dataList"),
        ];
        for (name, type_name, list) in cases {
            let derived = GraphqlNames::derive(name, None).unwrap();
            assert_eq!(
                (derived.type_name.as_str(), derived.plural.as_str()),
                (type_name, list),
                "{name}"
            );
            // Reloaded from its stored type name, a collection keeps its names.
            let reloaded = GraphqlNames::derive(type_name, Some(type_name)).unwrap();
            assert_eq!(reloaded, derived, "{name} reloaded");
        }
        // Already singular names stay.
        for name in [
            "Status", "Address", "Analysis", "Bus", "Person", "Child", "Movie", "Index",
        ] {
            assert_eq!(GraphqlNames::derive(name, None).unwrap().type_name, name);
        }
    }

    #[test]
    fn unusable_names_ask_for_a_graphql_name() {
        for bad in ["", "  ", "123", "日本語"] {
            let err = GraphqlNames::derive(bad, None).unwrap_err();
            assert_eq!(err.code(), "INVALID_GRAPHQL_NAME", "{bad}");
        }
    }

    #[test]
    fn names_of_the_core_schema_and_of_other_collections_are_taken() {
        let core: HashSet<String> = ["User".to_string(), "users".to_string()].into();
        let users = GraphqlNames::derive("users", None).unwrap();
        assert_eq!(
            users.check_free(&core, []).unwrap_err().code(),
            "GRAPHQL_NAME_TAKEN"
        );
        let posts = GraphqlNames::derive("posts", None).unwrap();
        posts.check_free(&core, []).unwrap();
        let again = GraphqlNames::derive("Post", Some("Post")).unwrap();
        assert_eq!(
            again.check_free(&core, [&posts]).unwrap_err().code(),
            "GRAPHQL_NAME_TAKEN"
        );
    }
}
