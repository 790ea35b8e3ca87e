#!/usr/bin/env python3
"""Writes N realistic screenplay elements as JSON lines (the search role's document shape),
deterministically from a fixed seed: scene headings, action lines, character cues, dialogue.

Usage: bench/search_elements.py N [SEED] > elements.jsonl
"""
import json
import random
import sys

FIRST = ["MARGARET", "THOMAS", "ELENA", "JONAH", "RUTH", "SAMUEL", "IRIS", "VICTOR", "NORA", "FELIX",
         "AGNES", "OSCAR", "LENA", "ARTHUR", "MAYA", "HUGO", "CLARA", "DESMOND", "PRIYA", "WALTER"]
PLACES = ["KITCHEN", "GARDEN", "LIGHTHOUSE", "CAR", "HALLWAY", "DINER", "TRAIN STATION", "ROOFTOP",
          "BASEMENT", "OFFICE", "HOSPITAL CORRIDOR", "BEACH", "BARN", "LIBRARY", "MOTEL ROOM"]
TIMES = ["DAY", "NIGHT", "DAWN", "DUSK", "CONTINUOUS", "LATER", "MOMENTS LATER"]
VERBS = ["opens", "closes", "crosses", "studies", "drops", "grabs", "slams", "watches", "circles",
         "pockets", "lights", "reads", "hides", "tears", "polishes", "unlocks", "drags", "sets down"]
OBJECTS = ["the door", "a letter", "the half-lit lamp", "an old photograph", "the kettle", "a suitcase",
           "the window", "a broken watch", "the radio", "her coat", "the keys", "a bloodied glove",
           "the ledger", "a paper boat", "the telephone", "a candle"]
ADVERBS = ["slowly", "without a word", "in a hurry", "carefully", "for a long moment", "again",
           "as the rain starts", "while the radio hums", "out of habit", "with trembling hands"]
LINES = ["Who left the door open?", "I told you not to come back here.", "It's later than you think.",
         "Did you hear that?", "We can't stay in this house.", "Give me the keys, Thomas.",
         "She's not coming back, is she?", "Then we wait.", "You kept the letter all these years?",
         "Nobody drives to the lighthouse at night.", "I'm sorry. I really am.", "Read it again.",
         "What's in the suitcase?", "The train leaves at dawn.", "Don't look at me like that."]


def heading(rng):
    return f"{rng.choice(['INT.', 'EXT.', 'INT./EXT.'])} {rng.choice(PLACES)} - {rng.choice(TIMES)}"


def action(rng):
    who = rng.choice(FIRST).title()
    text = f"{who} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ADVERBS)}."
    if rng.random() < 0.4:
        text += f" {rng.choice(FIRST).title()}'s {rng.choice(['eyes', 'shadow', 'voice', 'hands'])} " \
                f"{rng.choice(['linger', 'tremble', 'fade', 'follow'])}."
    return text


def main():
    count = int(sys.argv[1])
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 14)
    out = sys.stdout
    for n in range(1, count + 1):
        kind = rng.choices(["section", "action", "character", "spokenWord", "script"], [8, 45, 20, 25, 2])[0]
        if kind == "section":
            comment = heading(rng)
        elif kind == "character":
            comment = rng.choice(FIRST)
        elif kind == "spokenWord":
            comment = f"{rng.choice(FIRST)}: {rng.choice(LINES)}"
        elif kind == "script":
            comment = f"Script draft {rng.randint(1, 9)}: {rng.choice(PLACES).title()}"
        else:
            comment = action(rng)
        version = rng.randint(1, 3)
        document = {"id": f"{n}_{version}", "element_type": kind, "element_id": n, "sequence_number": n,
                    "version_number": version, "comment": comment, "service_name": "sequence"}
        out.write(json.dumps(document) + "\n")


if __name__ == "__main__":
    main()
