"""The quality benchmark's tasks: templated prompts with ground truth, and the candidates that were measured.

Each task is a user-message template, a generator of (prompt, answer) pairs and the DistillationJob
`data` settings that score it (`taskType` nli with labels, qa, or math). `python hack/bench_quality.py
--probe-tasks` serves the teacher and scores it on every candidate (see docs/benchmarks.md for what it
scored): a task is only worth distilling when the teacher is well above chance on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    name: str
    task_type: str  # nli | qa | math (distillery.api.TaskType)
    template: str  # data.promptTemplate; {prompt} is the generated text
    make: Callable[[random.Random], tuple[str, str]]  # one (prompt, answer) pair
    labels: list[str] = field(default_factory=list)  # nli only
    max_tokens: int = 8
    chance: float = 0.0  # the score of guessing (nli: 1 / labels)
    leak: str = ""  # how validation answers also occur in training (labelled 'leaky' in every report)

    def data(self) -> dict:
        """The job's `data` section, minus the files."""
        out = {"taskType": self.task_type, "promptTemplate": self.template, "systemPrompt": ""}
        return {**out, "labels": self.labels} if self.labels else out

    def records(
        self, seed: int, count: int, exclude: set[str] = frozenset(), prefix: str = "r", fewer: bool = False
    ) -> list[dict]:
        """`count` distinct prompts (none in `exclude`) as records with `id`, `prompt`, `answer`; with `fewer`,
        as many as the task has when that is less."""
        rng = random.Random(seed)
        seen, out = set(exclude), []
        for _ in range(count * 200):
            if len(out) == count:
                return out
            text, answer = self.make(rng)
            if text not in seen:
                seen.add(text)
                out.append({"id": f"{prefix}-{len(out):04d}", "prompt": text, "answer": answer})
        if fewer:
            return out
        raise ValueError(f"task {self.name}: only {len(out)} distinct prompts, {count} asked")


# ------------------------------------------------------------------ review sentiment (the first task)

# Measured first (vLLM, greedy, 120 reviews): SmolLM2-135M-Instruct labels these short reviews 97.5%
# correctly with this exact user message and no system message; longer reviews with a mixed aside, or the
# question before the review, or a system message telling it the format, drop it to 18-47%.
THINGS = ["movie", "film", "book", "restaurant", "hotel", "album", "phone", "game", "show", "laptop",
          "concert", "novel", "camera", "cafe", "series", "podcast"]  # fmt: skip  # packed vocabulary table
POSITIVE = ["great", "wonderful", "excellent", "fantastic", "amazing", "delightful", "superb", "lovely",
            "brilliant", "charming", "outstanding", "enjoyable"]  # fmt: skip  # packed vocabulary table
NEGATIVE = ["terrible", "awful", "horrible", "boring", "dreadful", "disappointing", "poor", "bad",
            "dull", "annoying", "mediocre", "unpleasant"]  # fmt: skip  # packed vocabulary table
FORMS = {
    "positive": [
        "The {t} was {w}.",
        "I loved this {t}. It was {w}.",
        "What a {w} {t}!",
        "This {t} is {w}.",
        "A {w} {t}, I enjoyed it.",
    ],
    "negative": [
        "The {t} was {w}.",
        "I hated this {t}. It was {w}.",
        "What a {w} {t}!",
        "This {t} is {w}.",
        "A {w} {t}, I did not enjoy it.",
    ],
}


def review(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(["positive", "negative"])
    words = POSITIVE if label == "positive" else NEGATIVE
    return rng.choice(FORMS[label]).format(t=rng.choice(THINGS), w=rng.choice(words)), label


SENTIMENT = Task(
    "sentiment",
    "nli",
    "Review: {prompt}\nIs this review positive or negative? Answer with one word.",
    review,
    labels=["positive", "negative"],
    chance=0.5,
)


# ------------------------------------------------------------------ candidates for the harder task

TOPICS = {
    "sports": [
        "The team won the match in the last minute.",
        "She scored two goals in the final.",
        "The runner finished the marathon in record time.",
        "The coach praised his players after the game.",
        "Our club lost the tennis tournament.",
        "The swimmer won a gold medal.",
        "Fans cheered as the striker took the penalty.",
        "The basketball season starts next week.",
    ],
    "food": [
        "The soup needs more salt and pepper.",
        "We baked fresh bread this morning.",
        "This pasta with tomato sauce is delicious.",
        "He ordered a pizza with extra cheese.",
        "The chef cooked rice and grilled fish.",
        "She made a chocolate cake for dessert.",
        "Add two eggs and a cup of flour.",
        "The salad had fresh lettuce and olives.",
    ],
    "weather": [
        "It will rain heavily tomorrow afternoon.",
        "A cold wind is blowing from the north.",
        "The forecast says sunny skies all week.",
        "Snow covered the roads this morning.",
        "A thunderstorm is coming tonight.",
        "It is hot and humid today.",
        "Fog made it hard to see the road.",
        "Temperatures will drop below freezing.",
    ],
    "technology": [
        "The new phone has a faster processor.",
        "Install the latest software update.",
        "My laptop keeps crashing when I open the app.",
        "The company released a new computer chip.",
        "The website loads slowly on my browser.",
        "He wrote a program in Python.",
        "The robot can recognise faces.",
        "Charge the battery before using the tablet.",
    ],
}
OPENERS = ["", "I heard that ", "Today ", "Someone said: ", "News: "]


def topic(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(TOPICS))
    sentence = rng.choice(TOPICS[label])
    opener = rng.choice(OPENERS)
    return (opener + sentence[0].lower() + sentence[1:] if opener else sentence), label


def addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(10), rng.randrange(10)
    return f"{a} + {b}", str(a + b)


def addition_two_digit(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(10, 50), rng.randrange(1, 10)
    return f"{a} + {b}", str(a + b)


ADD_FORMS = ["What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.",
             "What do you get when you add {a} and {b}?"]  # fmt: skip  # packed vocabulary table


def addition_small(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(1, 21), rng.randrange(1, 21)
    return rng.choice(ADD_FORMS).format(a=a, b=b), str(a + b)


NEXT_FORMS = ["What number comes after {n}?", "What is the next number after {n}?",
              "Which number comes right after {n}?", "What number follows {n}?"]  # fmt: skip  # packed vocabulary table


def successor(rng: random.Random) -> tuple[str, str]:
    n = rng.randrange(1, 1000)
    return rng.choice(NEXT_FORMS).format(n=n), str(n + 1)


def even_odd(rng: random.Random) -> tuple[str, str]:
    n = rng.randrange(1, 1000)
    return str(n), "even" if n % 2 == 0 else "odd"


def larger(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(1, 100), 2)
    return f"{a} or {b}", str(max(a, b))


ANTONYMS = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "old": "new",
            "light": "dark", "open": "closed", "early": "late", "hard": "soft", "rich": "poor",
            "tall": "short", "full": "empty", "strong": "weak", "wet": "dry", "day": "night", "left": "right",
            "good": "bad", "young": "old", "thick": "thin", "win": "lose", "push": "pull", "in": "out",
            "loud": "quiet", "cheap": "expensive", "near": "far", "clean": "dirty", "first": "last"}  # fmt: skip  # packed vocabulary table


def antonym(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(sorted(ANTONYMS))
    return word, ANTONYMS[word]


CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
            "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "Greece": "Athens", "Canada": "Ottawa",
            "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw", "Norway": "Oslo", "Sweden": "Stockholm",
            "Ireland": "Dublin", "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "Thailand": "Bangkok"}  # fmt: skip  # packed vocabulary table


def capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return country, CAPITALS[country]


ANIMALS = {"mammal": ["dog", "cat", "horse", "cow", "whale", "lion", "mouse", "bear", "rabbit", "elephant"],
           "bird": ["eagle", "sparrow", "owl", "parrot", "penguin", "duck", "crow", "swan", "pigeon", "hawk"],
           "fish": ["salmon", "trout", "shark", "tuna", "cod", "goldfish", "carp", "herring", "sardine", "eel"]}  # fmt: skip  # packed vocabulary table


def animal_class(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(ANIMALS))
    return f"a {rng.choice(ANIMALS[label])}", label


# A larger version of `animal`: 24 animals per class, said in several ways.
ZOO = {"mammal": ANIMALS["mammal"] + ["wolf", "fox", "deer", "tiger", "monkey", "goat", "sheep", "pig", "zebra",
                                      "giraffe", "camel", "squirrel", "bat", "dolphin"],
       "bird": ANIMALS["bird"] + ["robin", "falcon", "seagull", "goose", "flamingo", "ostrich", "peacock",
                                  "woodpecker", "pelican", "canary", "heron", "stork", "chicken", "turkey"],
       "fish": ANIMALS["fish"] + ["mackerel", "catfish", "pike", "perch", "bass", "haddock", "anchovy", "halibut",
                                  "swordfish", "piranha", "minnow", "sturgeon", "tilapia", "snapper"]}  # fmt: skip  # packed vocabulary table
ZOO_FORMS = ["a {a}", "the {a}", "a young {a}", "a wild {a}", "a big {a}", "a small {a}", "an old {a}",
             "a little {a}", "a hungry {a}", "a tired {a}", "a lone {a}", "this {a}"]  # fmt: skip  # packed vocabulary table


def zoo_class(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(ZOO))
    return rng.choice(ZOO_FORMS).format(a=rng.choice(ZOO[label])), label


CONTINENTS = {"Europe": ["France", "Germany", "Italy", "Spain", "Poland", "Sweden", "Norway", "Greece", "Portugal",
                         "Austria", "Ireland", "Belgium", "Denmark", "Finland", "Hungary", "Netherlands"],
              "Asia": ["China", "Japan", "India", "Thailand", "Vietnam", "Korea", "Indonesia", "Pakistan",
                       "Malaysia", "Nepal", "Mongolia", "Philippines", "Iran", "Iraq", "Cambodia", "Laos"],
              "Africa": ["Egypt", "Kenya", "Nigeria", "Ghana", "Ethiopia", "Morocco", "Algeria", "Tanzania",
                         "Uganda", "Senegal", "Zambia", "Angola", "Mali", "Sudan", "Tunisia", "Somalia"]}  # fmt: skip  # packed vocabulary table
CONTINENT_FORMS = ["{c}", "the country {c}", "{c}, the country,"]


def continent(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(CONTINENTS))
    return rng.choice(CONTINENT_FORMS).format(c=rng.choice(CONTINENTS[label])), label


CANDIDATES = {
    task.name: task
    for task in (
        SENTIMENT,
        Task(
            "topic",
            "nli",
            "Sentence: {prompt}\nIs this sentence about sports, food, weather or technology? "
            "Answer with one word.",
            topic,
            labels=sorted(TOPICS),
            chance=0.25,
        ),
        Task(
            "add",
            "math",
            "What is {prompt}? Answer with the number only.",
            addition,
            max_tokens=16,
            chance=0.1,
        ),
        Task(
            "add2",
            "math",
            "What is {prompt}? Answer with the number only.",
            addition_two_digit,
            max_tokens=16,
        ),
        Task("add20", "math", "{prompt} Answer with the number only.", addition_small, max_tokens=16),
        Task("next", "math", "{prompt} Answer with the number only.", successor, max_tokens=16),
        Task(
            "parity",
            "nli",
            "Is {prompt} an even or an odd number? Answer with one word.",
            even_odd,
            labels=["even", "odd"],
            chance=0.5,
        ),
        Task(
            "larger",
            "math",
            "Which number is larger: {prompt}? Answer with the number only.",
            larger,
            max_tokens=16,
            chance=0.5,
        ),
        Task(
            "antonym",
            "qa",
            'What is the opposite of "{prompt}"? Answer with one word.',
            antonym,
            max_tokens=16,
        ),
        Task("capital", "qa", "What is the capital of {prompt}? Answer with one word.", capital),
        Task(
            "animal",
            "nli",
            "Is {prompt} a mammal, a bird or a fish? Answer with one word.",
            animal_class,
            labels=sorted(ANIMALS),
            chance=1 / 3,
        ),
        Task(
            "zoo",
            "nli",
            "Is {prompt} a mammal, a bird or a fish? Answer with one word.",
            zoo_class,
            labels=sorted(ZOO),
            chance=1 / 3,
            leak="every validation animal also occurs in the training prompts, in other phrasings",
        ),
        Task(
            "continent",
            "nli",
            "Is {prompt} in Europe, Asia or Africa? Answer with one word.",
            continent,
            labels=sorted(CONTINENTS),
            chance=1 / 3,
        ),
    )
}
