# ruff: noqa: E501
# (The hand-written Japanese strings below are wider than 110 columns; code lines stay within it.)
"""Build prefkit's bundled "Socratic tutor" preference dataset.

``chosen``: the tutor guides the learner with a question (1-2 short sentences, ending in ? / ？).
``rejected``: the tutor dumps the answer (2-3 plain, correct declarative sentences, no ? / ？ at all).

All topic content (learner questions, hints, guiding questions, plain facts) is hand-written below as
Python data, in English and Japanese separately. The script composes pairs from it with a seeded
``random.Random(0)``, splits train/test by TOPIC (a topic's prompts in both languages go to one split),
checks every invariant and fails loudly if one is broken, then writes

    src/prefkit/builtin/data/tutor_train.jsonl
    src/prefkit/builtin/data/tutor_test.jsonl

Usage::

    python scripts/make_tutor_data.py            # (re)write the files
    python scripts/make_tutor_data.py --check    # exit 1 unless the committed files equal a fresh build
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SEED = 0
REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "src" / "prefkit" / "builtin" / "data"
TRAIN_FILE = "tutor_train.jsonl"
TEST_FILE = "tutor_test.jsonl"

DOMAINS = ("adtech", "ai", "programming", "data_science")
LANGS = ("en", "ja")

# Length limits: English in words, Japanese in characters.
MAX_PROMPT = {"en": 25, "ja": 28}
MAX_CHOSEN = {"en": 35, "ja": 52}
MAX_REJECTED = {"en": 45, "ja": 48}
# Per pair, len(rejected) / len(chosen) must lie in this range (length alone should not separate them).
LENGTH_RATIO = (0.6, 2.2)
# Rejected replies are matched to chosen ones to be about this much longer (they have one more sentence).
TARGET_RATIO = 1.2

# Test split: per domain, one topic written in both languages, one Japanese-only topic and enough
# English-only topics to reach TEST_PER_DOMAIN pairs.
TEST_PER_DOMAIN = 15
MIN_TOTAL = 330
MIN_JA = 120
MIN_TRAIN = 270
MIN_TEST_JA = 20
TEST_RANGE = (50, 70)

# Japanese chosen replies may open by naming the learner's subject ({s}: the prompt's first run of nouns),
# so that what the tutor guides toward is visibly the learner's own question. (A generic opener such as
# いい質問ですね taught a 135M model to ask generic questions.)
ACKS_EN = [
    "Good question.",
    "Let's work it out together.",
    "Let's reason through it.",
    "Good thing to ask about.",
]
SUBJECT_LEADS_JA = [
    "「{s}」ですね。",
    "{s}について一緒に考えましょう。",
    "{s}について順に考えましょう。",
    "{s}、よい着眼点です。",
]
OPENERS = {
    "en": ["Here is the answer.", "Here is the short explanation.", "The answer is straightforward."],
    "ja": ["説明します。", "お答えします。", "答えは簡単です。"],
}


@dataclass(frozen=True)
class Unit:
    """One topic in one language: learner prompts, hints, guiding questions and plain facts."""

    prompts: list[str]
    hints: list[str]
    questions: list[str]
    facts: list[str]  # facts[0] defines the idea; facts[1] and facts[2] must each read well right after it


@dataclass(frozen=True)
class Topic:
    key: str
    domain: str
    en: Unit | None = None
    ja: Unit | None = None

    def units(self) -> list[tuple[str, Unit]]:
        return [(lang, u) for lang, u in (("en", self.en), ("ja", self.ja)) if u is not None]


U = Unit
T = Topic

# ---------------------------------------------------------------------------------------------------
# Hand-written topic content
# ---------------------------------------------------------------------------------------------------

TOPICS: list[Topic] = [
    # ---- advertising technology -------------------------------------------------------------------
    T(
        "real_time_bidding",
        "adtech",
        en=U(
            [
                "What is real-time bidding?",
                "How does RTB work?",
                "Can you explain real-time bidding in online advertising?",
            ],
            ["Think about what happens in the fraction of a second while a web page loads."],
            [
                "Who do you think is bidding in that moment, and what exactly are they bidding on?",
                "If each single ad impression were auctioned on its own, what would a bidder want to know before naming a price?",
            ],
            [
                "Real-time bidding is an automated auction for a single ad impression, held while the page loads.",
                "Bidders receive details about the page and the user and reply with bids within roughly 100 milliseconds.",
                "The highest bid wins and that advertiser's ad is shown.",
            ],
        ),
        ja=U(
            ["RTBとは何ですか？", "リアルタイム入札の仕組みは？", "RTBで広告はどう決まりますか？"],
            ["ページが開く一瞬に注目しましょう。"],
            [
                "その一瞬に、誰が何に入札していると思いますか？",
                "入札する側は、価格を決める前に何を知りたいでしょうか？",
            ],
            [
                "RTBは広告表示1回ごとの自動オークションです。",
                "入札はページの読み込み中に行われます。",
                "最も高い入札の広告が表示されます。",
            ],
        ),
    ),
    T(
        "dsp_vs_ssp",
        "adtech",
        en=U(
            [
                "What is the difference between a DSP and an SSP?",
                "DSP vs SSP: which side is which?",
                "Why does ad tech need both DSPs and SSPs?",
            ],
            ["Every market has a buy side and a sell side."],
            [
                "Which side of the market do you think a demand-side platform works for, and who would need the supply side?",
                "If you owned a website with empty ad slots, which kind of platform would you want working for you, and why?",
            ],
            [
                "A DSP, or demand-side platform, lets advertisers buy ad impressions automatically across many sources.",
                "An SSP, or supply-side platform, lets publishers sell their ad inventory at the best available price.",
                "The two usually meet in an ad exchange, where DSPs bid on impressions offered through SSPs.",
            ],
        ),
        ja=U(
            ["DSPとSSPの違いは何ですか？", "DSPは誰が使うものですか？", "SSPの役割を教えてください。"],
            ["市場には買い手と売り手がいます。"],
            [
                "「デマンド」は買い手と売り手のどちら側だと思いますか？",
                "広告枠を売るサイトなら、どちらを使うでしょうか？",
            ],
            [
                "DSPは広告主が広告枠を買う仕組みです。",
                "SSPはメディアが広告枠を売る仕組みです。",
                "両者は取引所を通じてつながります。",
            ],
        ),
    ),
    T(
        "cpm",
        "adtech",
        en=U(
            [
                "What does CPM mean?",
                "How is CPM calculated?",
                "Why are ad prices quoted per thousand impressions?",
            ],
            ["The M comes from mille, Latin for a thousand."],
            [
                "If a campaign costs $50 for 10,000 impressions, how would you work out the price of each thousand?",
                "Given that M stands for mille, what do you think you are paying for when you buy on a CPM basis?",
            ],
            [
                "CPM means cost per mille, the price an advertiser pays for one thousand ad impressions.",
                "It is calculated as total cost divided by impressions, multiplied by 1,000.",
                "For example, $50 spent on 10,000 impressions is a CPM of $5.",
            ],
        ),
    ),
    T(
        "cpc",
        "adtech",
        ja=U(
            ["CPCとは何ですか？", "クリック単価の計算方法は？", "CPC課金とは何ですか？"],
            ["CPCはCost Per Clickの略です。"],
            [
                "1万円で200クリックなら、1回いくらになりますか？",
                "表示だけでは費用がかからないなら、何に払うのでしょうか？",
            ],
            [
                "CPCは1クリックあたりの広告費です。",
                "広告費をクリック数で割って求めます。",
                "CPC課金ではクリック時だけ費用が発生します。",
            ],
        ),
    ),
    T(
        "click_through_rate",
        "adtech",
        en=U(
            [
                "What is click-through rate?",
                "How do I calculate CTR?",
                "My ad has a 0.5% CTR. What does that number mean?",
            ],
            ["A rate compares a count of one thing with a count of another."],
            [
                "If an ad was shown 2,000 times and clicked 10 times, what would you divide by what?",
                "Which two numbers do you think you need to measure how often people who see an ad click on it?",
            ],
            [
                "Click-through rate is the share of ad impressions that lead to a click.",
                "It equals clicks divided by impressions, usually shown as a percentage.",
                "A 0.5% CTR means about 5 clicks for every 1,000 impressions.",
            ],
        ),
        ja=U(
            ["CTRとは何ですか？", "クリック率の計算方法は？", "CTR1%とはどういう意味ですか？"],
            ["「率」は割り算で求めます。"],
            [
                "1000回表示で10クリックなら、何を何で割りますか？",
                "見た人のうち何人がクリックしたかは、どう表せるでしょうか？",
            ],
            [
                "CTRは表示のうちクリックされた割合です。",
                "クリック数を表示回数で割って求めます。",
                "CTR1%は100回の表示で約1クリックです。",
            ],
        ),
    ),
    T(
        "conversion_rate",
        "adtech",
        en=U(
            [
                "What is a conversion rate in advertising?",
                "How is conversion rate different from CTR?",
                "How do I calculate the conversion rate of a campaign?",
            ],
            ["A click is not the end of the journey for an advertiser."],
            [
                "After someone clicks an ad, what action would the advertiser really like them to take next?",
                "If 200 people clicked and 6 of them bought something, what fraction would you compute?",
            ],
            [
                "Conversion rate is the share of clicks or visits that end in a desired action, such as a purchase or sign-up.",
                "It is conversions divided by clicks, so 6 purchases from 200 clicks is 3%.",
                "CTR measures clicks per impression, while conversion rate measures what happens after the click.",
            ],
        ),
    ),
    T(
        "attribution",
        "adtech",
        en=U(
            [
                "What is attribution in digital advertising?",
                "What is the difference between last-click and multi-touch attribution?",
                "Why is ad attribution so hard?",
            ],
            ["A customer often sees several ads before they finally buy."],
            [
                "If someone saw a video ad, then a banner, then clicked a search ad and bought, which ad deserves the credit?",
                "What might go wrong if you gave all the credit for a sale to the very last ad someone clicked?",
            ],
            [
                "Attribution is the process of assigning credit for a conversion to the ads or channels that led to it.",
                "Last-click attribution gives all the credit to the final touchpoint before the conversion.",
                "Multi-touch models spread the credit across several touchpoints, for example evenly or by position.",
            ],
        ),
        ja=U(
            [
                "アトリビューションとは何ですか？",
                "ラストクリックの問題点は？",
                "広告の貢献度はどう測りますか？",
            ],
            ["購入前に複数の広告を見ることはよくあります。"],
            [
                "動画、バナー、検索広告を見て買ったら、どれの手柄でしょうか？",
                "最後の広告だけを評価すると、何が見落とされるでしょうか？",
            ],
            [
                "成果への貢献度を各広告に割り当てる考え方です。",
                "ラストクリックは最後の広告に全成果を与えます。",
                "複数の広告に成果を配分するモデルもあります。",
            ],
        ),
    ),
    T(
        "frequency_capping",
        "adtech",
        en=U(
            [
                "What is frequency capping?",
                "Why would an advertiser limit how often someone sees an ad?",
                "How does a frequency cap work in a DSP?",
            ],
            ["Think about how you feel when the same ad follows you all day."],
            [
                "What happens to a viewer's reaction, and to the budget, when someone sees the same ad for the tenth time?",
                "If you could limit how many times one person sees your ad each day, what number would you choose and why?",
            ],
            [
                "Frequency capping limits how many times the same user sees an ad within a set period.",
                "A typical cap might be three impressions per user per day.",
                "Capping prevents ad fatigue and spreads the budget over more unique people.",
            ],
        ),
        ja=U(
            [
                "フリークエンシーキャップとは？",
                "広告の表示回数を制限する理由は？",
                "表示回数の上限はどう決めますか？",
            ],
            ["同じ広告ばかりだと人は飽きます。"],
            [
                "同じ人に10回見せたら、反応と予算はどうなるでしょうか？",
                "1人あたりの上限は、何を基準に決めますか？",
            ],
            [
                "同じ人への表示回数に上限を設ける設定です。",
                "例えば「1人1日3回まで」と指定します。",
                "広告疲れを防ぎ、予算を広く配分できます。",
            ],
        ),
    ),
    T(
        "third_party_cookies",
        "adtech",
        en=U(
            [
                "What are third-party cookies?",
                "Why are third-party cookies being phased out?",
                "What is the difference between first-party and third-party cookies?",
            ],
            ["Look at which domain sets the cookie, compared with the site in the address bar."],
            [
                "If a cookie is set by a domain other than the site you are visiting, what could that domain learn as you move between sites?",
                "Why do you think browsers and privacy laws are stricter about cookies that follow users across many sites?",
            ],
            [
                "A third-party cookie is set by a domain other than the site the user is visiting, such as an ad server.",
                "Because the same ad server appears on many sites, its cookie can track a user across them.",
                "Safari and Firefox block third-party cookies by default, and privacy rules have pushed the industry away from them.",
            ],
        ),
        ja=U(
            [
                "サードパーティCookieとは？",
                "Cookie規制が進むのはなぜですか？",
                "1st party Cookieとの違いは？",
            ],
            ["Cookieを発行するドメインに注目しましょう。"],
            [
                "別のドメインのCookieは、サイトをまたいで何を知れるでしょうか？",
                "サイトをまたぐ追跡には、どんな問題があると思いますか？",
            ],
            [
                "訪問先以外のドメインが発行するCookieです。",
                "サイトをまたいだ追跡に使われます。",
                "Safariなどは標準でブロックします。",
            ],
        ),
    ),
    T(
        "contextual_targeting",
        "adtech",
        en=U(
            [
                "What is contextual targeting?",
                "How is contextual targeting different from behavioural targeting?",
                "Can I target ads without cookies?",
            ],
            ["Think about what a page itself tells you, without knowing anything about the reader."],
            [
                "If you knew nothing about a reader except the article they are reading, what ad would suit a hiking gear review?",
                "What information could you target ads with, if not the user's browsing history?",
            ],
            [
                "Contextual targeting places ads based on the content of the page, such as its topic and keywords.",
                "Behavioural targeting instead uses data about the user's past browsing.",
                "Because it needs no personal data, contextual targeting works without third-party cookies.",
            ],
        ),
    ),
    T(
        "ad_fraud",
        "adtech",
        en=U(
            ["What is ad fraud?", "How do bots commit ad fraud?", "What is domain spoofing in advertising?"],
            ["Advertisers pay for impressions and clicks, so follow the money."],
            [
                "If an advertiser pays for every impression, what incentive might a dishonest site have to fake its visitors?",
                "What signs in traffic data would make you suspect that a click came from a bot rather than a person?",
            ],
            [
                "Ad fraud is any attempt to make advertisers pay for impressions, clicks or conversions that are not genuine.",
                "Common forms include bot traffic, click farms and domain spoofing, where a low-quality site poses as a premium one.",
                "Verification vendors and standards such as ads.txt help detect and limit ad fraud.",
            ],
        ),
        ja=U(
            [
                "アドフラウドとは何ですか？",
                "不正クリックはどう見分けますか？",
                "広告不正の種類を教えてください。",
            ],
            ["広告主は表示やクリックに対価を払います。"],
            [
                "表示数で報酬が増えるなら、不正なサイトは何をするでしょうか？",
                "ボットを疑うなら、データのどこを見ますか？",
            ],
            [
                "偽の表示やクリックで広告費を奪う不正です。",
                "ボットや有名サイトへのなりすましが典型です。",
                "ads.txtはなりすまし対策の仕組みです。",
            ],
        ),
    ),
    T(
        "viewability",
        "adtech",
        en=U(
            [
                "What is ad viewability?",
                "What counts as a viewable impression?",
                "Why do advertisers care whether an ad was actually seen?",
            ],
            ["An ad can be served at the bottom of a page that nobody scrolls to."],
            [
                "If an ad loads below the fold and the user never scrolls down, should the advertiser pay, and how would you check?",
                "What two things would you measure to decide whether an ad had a real chance to be seen?",
            ],
            [
                "Viewability measures whether an ad actually had a chance to be seen by a user.",
                "The common MRC standard for display ads is at least 50% of the pixels in view for one continuous second.",
                "For video ads, the MRC standard is 50% of the pixels in view for two continuous seconds.",
            ],
        ),
    ),
    T(
        "header_bidding",
        "adtech",
        en=U(
            [
                "What is header bidding?",
                "Why did publishers move to header bidding?",
                "How is header bidding different from the waterfall?",
            ],
            ["In the old waterfall, demand sources were asked one after another."],
            [
                "If buyers are asked one at a time in a fixed order, what might a publisher lose when a later buyer would pay more?",
                "What would change for a publisher if all demand sources could bid at the same time?",
            ],
            [
                "Header bidding lets a publisher offer an impression to many demand sources at once before calling its ad server.",
                "It replaced the waterfall, where sources were asked in a fixed order and higher bids could be missed.",
                "Running the bids in parallel usually raises competition and publisher revenue.",
            ],
        ),
    ),
    T(
        "first_vs_second_price",
        "adtech",
        en=U(
            [
                "What is the difference between first-price and second-price auctions?",
                "Why did ad exchanges move to first-price auctions?",
                "What is bid shading?",
            ],
            ["Compare what the winner actually pays in each case."],
            [
                "In a second-price auction, why is bidding your true value safe, and does that still hold if you pay your own bid?",
                "If you had to pay exactly what you bid, would you bid your full value or something lower?",
            ],
            [
                "In a first-price auction the winner pays its own bid; in a second-price auction it pays just above the second-highest bid.",
                "Most programmatic exchanges switched to first-price auctions around 2019.",
                "Buyers now use bid shading to bid below their true value and avoid overpaying.",
            ],
        ),
    ),
    T(
        "ad_exchange",
        "adtech",
        ja=U(
            [
                "アドエクスチェンジとは？",
                "アドネットワークとアドエクスチェンジの違いは？",
                "広告枠はどう取引されますか？",
            ],
            ["株式の取引所を思い浮かべましょう。"],
            [
                "株の取引所のように、誰と誰を結ぶ場所だと思いますか？",
                "買い手が多いとき、価格はどう決まると思いますか？",
            ],
            [
                "広告枠を売買するための取引市場です。",
                "SSPの広告枠にDSPがリアルタイムで入札します。",
                "多くのメディアの広告枠をまとめて扱えます。",
            ],
        ),
    ),
    T(
        "roas",
        "adtech",
        en=U(
            ["What is ROAS?", "How do I calculate return on ad spend?", "Is a ROAS of 3 good?"],
            ["It is a ratio of money coming in to money going out."],
            [
                "If you spent $1,000 on ads and they brought in $4,000 in revenue, what ratio would you compute?",
                "Why might a campaign with a high ROAS still lose money once you count the cost of the products?",
            ],
            [
                "ROAS, or return on ad spend, is the revenue attributed to ads divided by the ad spend.",
                "Spending $1,000 to generate $4,000 in revenue gives a ROAS of 4, often written as 400%.",
                "A high ROAS is not always profitable, because ROAS ignores the cost of goods.",
            ],
        ),
        ja=U(
            ["ROASとは何ですか？", "広告費用対効果の計算方法は？", "ROASとROIの違いは？"],
            ["入ったお金と出たお金を比べる指標です。"],
            [
                "広告費10万円で売上50万円なら、何を何で割りますか？",
                "ROASが高くても赤字になるのは、何が抜けているからでしょうか？",
            ],
            [
                "ROASは広告経由の売上を広告費で割った値です。",
                "広告費10万円で売上50万円なら500%です。",
                "ROIと違い、原価などは考慮しません。",
            ],
        ),
    ),
    T(
        "retargeting",
        "adtech",
        en=U(
            [
                "What is retargeting?",
                "How do ads follow me after I visit a shop's website?",
                "Why does retargeting often perform well?",
            ],
            ["Think about what the shop already knows about you after your first visit."],
            [
                "Why might someone who already viewed a product page be more likely to buy than a random visitor?",
                "What does a site need to record during your visit so it can show you its ads later on other sites?",
            ],
            [
                "Retargeting shows ads to people who have already visited a website or used an app.",
                "A tag or pixel on the site records the visit, and that audience is later targeted on other sites.",
                "Retargeting reaches people who already showed interest, so they tend to convert more often.",
            ],
        ),
        ja=U(
            [
                "リターゲティングとは何ですか？",
                "見た商品の広告が追ってくるのは？",
                "リターゲティングが効く理由は？",
            ],
            ["サイトは訪問者を記録できます。"],
            [
                "商品ページを見た人と初めての人、どちらが購入に近いでしょうか？",
                "後で広告を出すために、訪問時に何を記録するでしょうか？",
            ],
            [
                "一度サイトを訪れた人に再び広告を出す手法です。",
                "タグで訪問を記録し、他のサイトで配信します。",
                "購入を検討中の人を狙えるので効果が出やすいです。",
            ],
        ),
    ),
    T(
        "floor_price",
        "adtech",
        en=U(
            [
                "What is a floor price in programmatic advertising?",
                "Why do publishers set reserve prices?",
                "What happens if my floor price is too high?",
            ],
            ["Think of the minimum price a seller will accept at an auction."],
            [
                "If no bid reaches the publisher's minimum, what do you think happens to that impression?",
                "What trade-off does a publisher face between setting the minimum price high and setting it low?",
            ],
            [
                "A floor price, or reserve price, is the lowest bid a publisher will accept for an impression.",
                "Bids below the floor are rejected, so the impression may go unsold or to a fallback buyer.",
                "Floors set too high lower the fill rate, while floors set too low leave revenue on the table.",
            ],
        ),
    ),
    T(
        "private_marketplace",
        "adtech",
        ja=U(
            ["PMPとは何ですか？", "PMPとオープンオークションの違いは？", "広告主がPMPを使う利点は？"],
            ["招待制のオークションを想像しましょう。"],
            [
                "買い手を限定すると、売り手と買い手それぞれに何の得があるでしょうか？",
                "ブランドを気にする広告主は、どちらの市場を選ぶでしょうか？",
            ],
            [
                "招待された買い手だけが参加できる広告取引です。",
                "質の高い広告枠を確保しやすくなります。",
                "メディアは広告枠を高値で売りやすくなります。",
            ],
        ),
    ),
    T(
        "lookalike_audiences",
        "adtech",
        en=U(
            [
                "What are lookalike audiences?",
                "How does an ad platform find people similar to my customers?",
                "When should I use a lookalike audience?",
            ],
            ["Start from a seed list of people who already converted."],
            [
                "If you have a list of your best customers, what traits might a platform compare to find new people like them?",
                "Why would people who resemble your existing buyers be a better target than a random audience?",
            ],
            [
                "A lookalike audience is a group of new users who resemble a seed audience, such as existing customers.",
                "The ad platform models the seed's characteristics and finds users with similar patterns.",
                "Lookalikes are used to reach new prospects who are likely to convert.",
            ],
        ),
    ),
    T(
        "brand_safety",
        "adtech",
        ja=U(
            [
                "ブランドセーフティとは何ですか？",
                "広告が不適切なページに出たら？",
                "ブランドセーフティの守り方は？",
            ],
            ["広告は隣の記事と一緒に見られます。"],
            [
                "過激な記事の横に有名ブランドの広告があったら、どう感じますか？",
                "配信先を事前に管理するには、どんな手段があるでしょうか？",
            ],
            [
                "不適切な記事の横に広告を出さない考え方です。",
                "除外サイトや除外キーワードで配信先を管理します。",
                "第三者の検証ツールで配信面を確認します。",
            ],
        ),
    ),
    T(
        "incrementality",
        "adtech",
        en=U(
            [
                "What is incrementality in advertising?",
                "How does a lift test work?",
                "How do I know if my ads actually caused extra sales?",
            ],
            ["Some customers would have bought anyway, even without the ad."],
            [
                "How could you compare people who saw your ads with similar people who did not, and what would the gap tell you?",
                "If loyal customers would have purchased anyway, why might attribution reports overstate an ad's effect?",
            ],
            [
                "Incrementality is the extra outcome, such as sales, that advertising causes beyond what would have happened anyway.",
                "A lift test randomly splits users into an exposed group and a holdout group that sees no ads.",
                "Comparing exposed users with a random holdout group estimates the incremental effect.",
            ],
        ),
    ),
    # ---- AI / machine learning ----------------------------------------------------------------------
    T(
        "overfitting",
        "ai",
        en=U(
            [
                "What is overfitting?",
                "Why does my model score well on training data but badly on new data?",
                "How can I tell if my model is overfitting?",
            ],
            ["Compare how the model does on data it trained on with data it has never seen."],
            [
                "What do you think happens when a model memorises noise in the training set instead of the general pattern?",
                "If training loss keeps falling while validation loss starts rising, what might that be telling you?",
            ],
            [
                "Overfitting is when a model learns the noise and quirks of its training data instead of the general pattern.",
                "It shows up as strong training scores but poor validation scores.",
                "More data, regularisation and early stopping help reduce overfitting.",
            ],
        ),
        ja=U(
            ["過学習とは何ですか？", "テストで精度が落ちるのはなぜ？", "過学習はどう見つけますか？"],
            ["訓練データと未知のデータで成績を比べましょう。"],
            [
                "ノイズまで覚えたモデルは、新しいデータでどうなるでしょうか？",
                "訓練損失が下がり検証損失が上がるとき、何が起きていますか？",
            ],
            [
                "訓練データのノイズまで覚えてしまう状態です。",
                "訓練の精度は高く、検証の精度は低くなります。",
                "正則化や早期終了、データ追加で防ぎます。",
            ],
        ),
    ),
    T(
        "learning_rate",
        "ai",
        en=U(
            [
                "What is the learning rate?",
                "Why does my loss explode during training?",
                "How do I choose a learning rate?",
            ],
            ["The learning rate sets how big a step the optimiser takes along the gradient."],
            [
                "If you take huge steps downhill in the fog, what might happen when you get near the bottom of the valley?",
                "What would you expect the loss curve to look like if the steps were far too small?",
            ],
            [
                "The learning rate controls how far the weights move in each update.",
                "If it is too high the loss can oscillate or explode; if it is too low training is very slow.",
                "The learning rate is usually tuned with a sweep, often with warm-up and decay schedules.",
            ],
        ),
        ja=U(
            ["学習率とは何ですか？", "損失が発散するのはなぜですか？", "学習率はどう決めますか？"],
            ["学習率は1歩の大きさを決めます。"],
            [
                "霧の中を大股で下ると、谷底の近くでどうなるでしょうか？",
                "学習率が小さすぎると、損失の曲線はどうなるでしょうか？",
            ],
            [
                "1回の更新で重みを動かす幅を決める値です。",
                "大きすぎると発散し、小さすぎると遅くなります。",
                "減衰スケジュールと組み合わせるのが一般的です。",
            ],
        ),
    ),
    T(
        "embeddings",
        "ai",
        en=U(
            [
                "What are embeddings?",
                "How do word embeddings capture meaning?",
                "Why are embeddings useful for search?",
            ],
            ["Each item becomes a list of numbers, a point in space."],
            [
                "If similar words ended up as nearby points, how could you measure how related two words are?",
                "How might turning a sentence into a vector help you find documents with the same meaning but different words?",
            ],
            [
                "An embedding is a dense vector of numbers that represents an item such as a word, sentence or image.",
                "Embeddings are learned so that similar items end up close together, often compared with cosine similarity.",
                "Embeddings let search find results by meaning rather than by exact keywords.",
            ],
        ),
        ja=U(
            ["埋め込みとは何ですか？", "埋め込みで意味が表せる理由は？", "ベクトル検索の仕組みは？"],
            ["単語を空間上の点として考えましょう。"],
            [
                "似た単語が近い点になるなら、関係の強さはどう測れるでしょうか？",
                "文をベクトルにすると、意味の近い文書をどう探せるでしょうか？",
            ],
            [
                "単語や文を数値のベクトルで表したものです。",
                "意味が近いほどベクトルも近くなります。",
                "キーワードではなく意味で検索できます。",
            ],
        ),
    ),
    T(
        "attention",
        "ai",
        en=U(
            [
                "What is attention in transformers?",
                "How does self-attention work?",
                "What are queries, keys and values in attention?",
            ],
            ["When you read a sentence, some earlier words matter more for the current word than others."],
            [
                "In 'The cat sat down because it was tired', which word should 'it' attend to most, and how could a model score that?",
                "If each word could ask a question of every other word, what would you compare to decide which answers matter most?",
            ],
            [
                "Attention lets each token build its representation as a weighted mix of the other tokens.",
                "Each token has query, key and value vectors; softmax over query-key dot products gives the weights.",
                "The output for each token is a weighted average of value vectors, so it can draw on relevant context.",
            ],
        ),
    ),
    T(
        "tokenization",
        "ai",
        en=U(
            [
                "What is tokenization in language models?",
                "Why does an LLM split words into pieces?",
                "What is byte pair encoding?",
            ],
            ["A model cannot read raw text; it needs a fixed vocabulary of units."],
            [
                "If a model could only use whole words, what would it do with a word it has never seen?",
                "How could frequent pieces such as 'ing' or 'un' help a model handle rare words?",
            ],
            [
                "Tokenization splits text into units called tokens, which are mapped to IDs in a fixed vocabulary.",
                "Subword methods such as byte pair encoding merge frequent character sequences into single tokens.",
                "Subword tokens keep the vocabulary small while still covering rare and new words.",
            ],
        ),
        ja=U(
            ["トークン化とは何ですか？", "単語を細かく分けるのはなぜ？", "日本語はどうトークン化しますか？"],
            ["モデルは文字列を語彙のIDとして扱います。"],
            [
                "単語単位だけだと、未知の単語が来たらどうなるでしょうか？",
                "よく出る文字列をまとめると、語彙の大きさはどうなるでしょうか？",
            ],
            [
                "文章をトークンに分け、IDに変換する処理です。",
                "BPEはよく出る文字の並びをまとめます。",
                "サブワードなら未知語も分割して扱えます。",
            ],
        ),
    ),
    T(
        "fine_tuning",
        "ai",
        en=U(
            [
                "What is fine-tuning?",
                "How is fine-tuning different from training from scratch?",
                "When should I fine-tune a model instead of prompting it?",
            ],
            ["A pretrained model already knows a lot about language."],
            [
                "If a model already learned general language from huge data, why might a small amount of task data be enough?",
                "What might you gain, and what might you risk, by updating a pretrained model on a narrow dataset?",
            ],
            [
                "Fine-tuning continues training a pretrained model on a smaller, task-specific dataset.",
                "It reuses knowledge from pretraining, so it needs far less data and compute than training from scratch.",
                "Fine-tuning is useful when prompting alone cannot reach the behaviour or format you need.",
            ],
        ),
    ),
    T(
        "lora",
        "ai",
        en=U(
            ["What is LoRA?", "How does LoRA make fine-tuning cheaper?", "What does the rank mean in LoRA?"],
            ["Think about how many numbers a full weight update would contain."],
            [
                "If the update to a 4096 by 4096 matrix were the product of two thin matrices, how many parameters would you save?",
                "Why might it be enough to learn a small, low-rank change to the weights instead of changing all of them?",
            ],
            [
                "LoRA, or low-rank adaptation, freezes the original weights and learns an update made of two low-rank matrices.",
                "The rank sets the inner size of those matrices and so the number of trainable parameters.",
                "LoRA cuts memory use and lets many small adapters share one base model.",
            ],
        ),
        ja=U(
            ["LoRAとは何ですか？", "LoRAはなぜ軽いのですか？", "LoRAのランクとは何ですか？"],
            ["重み全体の更新は膨大な数になります。"],
            [
                "更新を細長い2つの行列の積にしたら、数はどう変わるでしょうか？",
                "低ランクの変化だけで十分なのは、なぜだと思いますか？",
            ],
            [
                "重みを固定し、低ランクの差分だけ学ぶ手法です。",
                "ランクは学習するパラメータ数を決めます。",
                "メモリを大きく節約できます。",
            ],
        ),
    ),
    T(
        "rlhf",
        "ai",
        en=U(
            [
                "What is RLHF?",
                "How does reinforcement learning from human feedback work?",
                "Why do chat models need RLHF after pretraining?",
            ],
            ["People find it easier to compare two answers than to write the perfect one."],
            [
                "If humans ranked pairs of model answers, how could you turn those rankings into a signal the model can learn from?",
                "What behaviour would a model trained only to predict internet text be missing as a helpful assistant?",
            ],
            [
                "RLHF trains a model with feedback from human preferences rather than only from text to imitate.",
                "Humans compare outputs, a reward model learns from the comparisons, and the policy is optimised against it.",
                "RLHF helps make models more helpful and better at following instructions.",
            ],
        ),
    ),
    T(
        "dpo",
        "ai",
        ja=U(
            ["DPOとは何ですか？", "DPOとRLHFの違いは？", "DPOに報酬モデルが不要な理由は？"],
            ["良い回答と悪い回答のペアから学びます。"],
            [
                "選ばれた回答と選ばれなかった回答、確率をどう動かすべきでしょうか？",
                "報酬モデルなしで直接更新できたら、何が楽になるでしょうか？",
            ],
            [
                "好みのペアからモデルを直接最適化する手法です。",
                "選ばれた回答の確率を相対的に上げます。",
                "報酬モデルや強化学習のループは不要です。",
            ],
        ),
    ),
    T(
        "gradient_descent",
        "ai",
        en=U(
            [
                "What is gradient descent?",
                "How does gradient descent find the minimum of a loss?",
                "What is the difference between batch and stochastic gradient descent?",
            ],
            ["The gradient points in the direction in which the loss rises fastest."],
            [
                "If the gradient points uphill, which direction should you step to make the loss smaller?",
                "Why might a gradient estimated from a small random batch still take you downhill, just more noisily?",
            ],
            [
                "Gradient descent minimises a loss by repeatedly moving the parameters opposite to the gradient.",
                "The size of each step is set by the learning rate.",
                "Stochastic gradient descent estimates the gradient from small batches, which is cheaper but noisier.",
            ],
        ),
    ),
    T(
        "dropout",
        "ai",
        ja=U(
            [
                "ドロップアウトとは何ですか？",
                "ドロップアウトが効く理由は？",
                "推論時もドロップアウトを使いますか？",
            ],
            ["一部のニューロンを毎回休ませると考えましょう。"],
            [
                "特定のニューロンに頼れないと、何を学ぶようになるでしょうか？",
                "学習時に一部を止めたなら、推論時はどうすべきでしょうか？",
            ],
            [
                "ニューロンをランダムに無効にする正則化です。",
                "特定の経路への依存を減らします。",
                "推論時は使わず、全ニューロンを使います。",
            ],
        ),
    ),
    T(
        "batch_size",
        "ai",
        en=U(
            [
                "What is batch size?",
                "Does a bigger batch size make training better?",
                "Why does my GPU run out of memory when I increase the batch size?",
            ],
            ["Each update averages the gradient over the examples in the batch."],
            [
                "What happens to the noise in the gradient estimate as you average over more examples, and what does it cost you?",
                "If every example in a batch must sit in memory at once, what limits how big the batch can be?",
            ],
            [
                "Batch size is the number of examples used to compute each gradient update.",
                "Larger batches give smoother gradient estimates but use more memory.",
                "Very large batches often need a retuned learning rate and do not always generalise better.",
            ],
        ),
    ),
    T(
        "temperature",
        "ai",
        en=U(
            [
                "What does temperature do in text generation?",
                "Why are my model's outputs so random?",
                "Should I use temperature 0 or 1?",
            ],
            ["Temperature divides the logits before the softmax."],
            [
                "If you divide all the scores by a small number before the softmax, does the top token become more or less dominant?",
                "When would you want the model to pick the most likely word every time, and when would you want more variety?",
            ],
            [
                "Temperature scales the logits before the next token is sampled.",
                "Low temperatures make output more deterministic, and high temperatures make it more random and diverse.",
                "Temperature 0 is usually treated as greedy decoding.",
            ],
        ),
        ja=U(
            [
                "temperatureとは何ですか？",
                "temperatureを上げるとどうなりますか？",
                "temperatureは0と1のどちらがいいですか？",
            ],
            ["softmaxの前にロジットを割る値です。"],
            [
                "小さい数で割ってからsoftmaxにすると、一番の確率はどうなるでしょうか？",
                "同じ答えが欲しいときと多様さが欲しいとき、どう設定しますか？",
            ],
            [
                "次のトークンの選び方のランダムさを調整する値です。",
                "低いと決定的に、高いと多様になります。",
                "0に近いと、ほぼ貪欲法と同じです。",
            ],
        ),
    ),
    T(
        "transfer_learning",
        "ai",
        ja=U(
            ["転移学習とは何ですか？", "少ないデータで画像分類するには？", "事前学習済みモデルの利点は？"],
            ["学習済みモデルは輪郭や模様を知っています。"],
            [
                "犬と猫で学んだ「見分ける力」は、別の課題でも役立つでしょうか？",
                "既存のモデルから始めると、必要なデータ量はどうなるでしょうか？",
            ],
            [
                "学習済みの知識を別の課題に生かす手法です。",
                "学習済みモデルを新しいデータで追加学習します。",
                "少ないデータでも高い性能を得やすくなります。",
            ],
        ),
    ),
    T(
        "activation_functions",
        "ai",
        en=U(
            [
                "Why do neural networks need activation functions?",
                "What is ReLU?",
                "What happens if I remove the activation functions from my network?",
            ],
            ["Stacking linear layers gives you another linear function."],
            [
                "If every layer just multiplies by a matrix, what does a stack of ten such layers reduce to?",
                "What kind of pattern could a network never learn if it could only draw straight lines?",
            ],
            [
                "Activation functions add non-linearity, which lets neural networks model complex patterns.",
                "Without them, any stack of linear layers collapses into a single linear transformation.",
                "ReLU, which outputs max(0, x), is a common choice because it is simple and trains well.",
            ],
        ),
    ),
    T(
        "vanishing_gradients",
        "ai",
        en=U(
            [
                "What is the vanishing gradient problem?",
                "Why do the early layers of my deep network barely learn?",
                "How do residual connections help deep networks train?",
            ],
            ["Backpropagation multiplies many derivatives together, one per layer."],
            [
                "If you multiply twenty numbers that are each around 0.1, what happens to the result, and what does that mean for early layers?",
                "How might adding a shortcut path around each layer change how the gradient flows back?",
            ],
            [
                "Vanishing gradients happen when gradients shrink as they are propagated back through many layers.",
                "Early layers then receive tiny updates and learn very slowly.",
                "ReLU activations, careful initialisation, normalisation and residual connections reduce the problem.",
            ],
        ),
    ),
    T(
        "hallucination",
        "ai",
        ja=U(
            [
                "ハルシネーションとは何ですか？",
                "AIがもっともらしい嘘をつくのは？",
                "ハルシネーションの減らし方は？",
            ],
            ["言語モデルは次のトークンを予測します。"],
            [
                "自然な文章であることと、事実であることは同じでしょうか？",
                "根拠の文書を一緒に渡したら、回答はどう変わるでしょうか？",
            ],
            [
                "事実と異なる内容をもっともらしく生成する現象です。",
                "モデルは事実を確かめずに続きを予測します。",
                "資料を渡すRAGや出典の確認で減らせます。",
            ],
        ),
    ),
    T(
        "context_window",
        "ai",
        en=U(
            [
                "What is a context window?",
                "Why does my chatbot forget what I said earlier?",
                "What happens when a prompt is longer than the context window?",
            ],
            ["A model can only attend to a fixed number of tokens at once."],
            [
                "If the model can only see the last few thousand tokens, what happens to the start of a very long conversation?",
                "How could you keep the important parts of a long document when it does not all fit at once?",
            ],
            [
                "The context window is the maximum number of tokens a model can process in one input.",
                "Text beyond the limit must be truncated or summarised, so earlier parts of a conversation can be lost.",
                "Retrieval and summarisation are common ways to work within the limit.",
            ],
        ),
    ),
    T(
        "loss_function",
        "ai",
        en=U(
            [
                "What is a loss function?",
                "Why do we use cross-entropy loss for classification?",
                "How does the loss tell a model what to learn?",
            ],
            ["Training needs a single number that says how wrong the model is."],
            [
                "If a model gives the correct class a probability of 0.9 in one case and 0.1 in another, which should be penalised more?",
                "Why does it help that the loss is something you can take a gradient of?",
            ],
            [
                "A loss function measures how far the model's predictions are from the targets.",
                "Training adjusts the parameters to minimise the loss, using its gradient.",
                "Cross-entropy is common for classification, and mean squared error for regression.",
            ],
        ),
        ja=U(
            ["損失関数とは何ですか？", "交差エントロピーを使う理由は？", "損失関数と評価指標の違いは？"],
            ["学習には「どれだけ間違えたか」の数値が必要です。"],
            [
                "正解に0.9と0.1の確率を出した場合、どちらを強く罰すべきでしょうか？",
                "勾配が取れない指標の代わりに、何を最小化すればよいでしょうか？",
            ],
            [
                "予測と正解のずれを数値で表す関数です。",
                "学習では勾配を使ってこれを最小化します。",
                "分類では交差エントロピーがよく使われます。",
            ],
        ),
    ),
    T(
        "quantization",
        "ai",
        en=U(
            [
                "What is model quantization?",
                "How can a large language model run on a laptop?",
                "Does 4-bit quantization hurt model quality?",
            ],
            ["Each weight is normally stored as a 16- or 32-bit number."],
            [
                "If you stored each weight in 4 bits instead of 16, how much memory would you save, and what might you lose?",
                "Why might a model still work well even if its weights are rounded to a small set of values?",
            ],
            [
                "Quantization stores model weights, and sometimes activations, with fewer bits, such as 8 or 4 instead of 16.",
                "This cuts memory use and can speed up inference.",
                "Quantization adds small rounding errors, so quality usually drops a little, more at very low bit widths.",
            ],
        ),
    ),
    T(
        "regularization",
        "ai",
        en=U(
            [
                "What is regularization?",
                "What does L2 regularization do?",
                "How does weight decay prevent overfitting?",
            ],
            ["Regularization adds a penalty to the loss."],
            [
                "If the loss also grew with the size of the weights, what kind of solutions would the model start to prefer?",
                "Why might a model with smaller weights generalise better to new data?",
            ],
            [
                "Regularization adds constraints or penalties that discourage overly complex models.",
                "L2 regularization adds the sum of squared weights to the loss, pushing the weights toward zero.",
                "Weight decay has a similar effect and helps reduce overfitting.",
            ],
        ),
    ),
    T(
        "epoch",
        "ai",
        ja=U(
            [
                "エポックとは何ですか？",
                "エポックとイテレーションの違いは？",
                "エポック数はいくつがいいですか？",
            ],
            ["データ全体を何周するかの数え方です。"],
            [
                "1000件をバッチ100で学習すると、1周で何回更新するでしょうか？",
                "エポック数を増やしすぎると、検証の成績はどうなるでしょうか？",
            ],
            [
                "訓練データ全体を1周学習することです。",
                "1000件をバッチ100なら1エポックは10回の更新です。",
                "多すぎると過学習するので検証損失で決めます。",
            ],
        ),
    ),
    # ---- programming --------------------------------------------------------------------------------
    T(
        "list_vs_tuple",
        "programming",
        en=U(
            [
                "What is the difference between a list and a tuple in Python?",
                "When should I use a tuple instead of a list?",
                "Why can a tuple be a dictionary key but a list cannot?",
            ],
            ["Try changing an element of each one in the interpreter."],
            [
                "What happens when you try to assign to an element of a tuple, and why might that be useful?",
                "Why would a dictionary need its keys to stay the same after they are stored?",
            ],
            [
                "Lists are mutable, so you can change, add or remove elements; tuples are immutable.",
                "Because tuples cannot change, a tuple of hashable items is hashable and can be a dictionary key.",
                "Tuples suit fixed records, while lists suit collections that grow or change.",
            ],
        ),
        ja=U(
            ["リストとタプルの違いは？", "タプルはいつ使いますか？", "タプルを辞書のキーにできる理由は？"],
            ["要素を書き換えて試してみましょう。"],
            [
                "タプルの要素に代入すると、何が起きるでしょうか？",
                "辞書のキーが後で変わったら、何が困るでしょうか？",
            ],
            [
                "リストは変更できますが、タプルは変更できません。",
                "そのためタプルは辞書のキーにできます。",
                "固定のデータの組にはタプルが向いています。",
            ],
        ),
    ),
    T(
        "recursion",
        "programming",
        en=U(
            [
                "What is recursion?",
                "How does a recursive function know when to stop?",
                "Why did my recursive function raise a RecursionError?",
            ],
            ["A recursive function solves a problem by calling itself on a smaller version of it."],
            [
                "To compute the factorial of 5, which smaller factorial would help you, and when should the calls stop?",
                "What do you think happens if a function keeps calling itself and never reaches a case it can answer directly?",
            ],
            [
                "Recursion is when a function calls itself to solve a smaller instance of the same problem.",
                "Every recursive function needs a base case that returns without recursing.",
                "Without a base case the calls never end, and Python raises RecursionError when the stack gets too deep.",
            ],
        ),
        ja=U(
            ["再帰とは何ですか？", "再帰関数はどう止まりますか？", "RecursionErrorが出るのはなぜ？"],
            ["再帰は自分をより小さな問題で呼びます。"],
            [
                "5の階乗は、どの小さな階乗から計算できるでしょうか？",
                "直接答えられる場合に届かないと、どうなるでしょうか？",
            ],
            [
                "関数が自分自身を呼び出して問題を解く方法です。",
                "止めるためのベースケースが必要です。",
                "終わらない再帰はRecursionErrorになります。",
            ],
        ),
    ),
    T(
        "big_o",
        "programming",
        en=U(
            [
                "What is Big O notation?",
                "What does O(n log n) mean?",
                "Why is an O(n^2) algorithm slow for large inputs?",
            ],
            ["Big O describes how the work grows as the input grows."],
            [
                "If your input doubles, how much more work does an algorithm with two nested loops over it need?",
                "Why might we ignore constant factors when comparing how algorithms behave on huge inputs?",
            ],
            [
                "Big O notation describes how an algorithm's time or memory grows with input size, ignoring constant factors.",
                "O(n) grows linearly, while O(n^2) roughly quadruples when the input doubles.",
                "O(n log n), typical of good sorting algorithms, grows only slightly faster than linear.",
            ],
        ),
        ja=U(
            ["O記法とは何ですか？", "O(n²)が遅いのはなぜですか？", "O(log n)とはどういう意味ですか？"],
            ["入力が増えたときの処理量の伸び方を表します。"],
            [
                "入力が2倍になると、二重ループの処理量は何倍でしょうか？",
                "範囲が毎回半分になるなら、入力2倍で手順はいくつ増えるでしょうか？",
            ],
            [
                "計算量の増え方を表す記法です。",
                "O(n²)は入力2倍で処理が約4倍です。",
                "O(log n)は入力2倍でも1手順ほどしか増えません。",
            ],
        ),
    ),
    T(
        "git_branches",
        "programming",
        en=U(
            [
                "What is a git branch?",
                "Why should I work on a branch instead of main?",
                "How do git branches work internally?",
            ],
            ["In git, a branch is lighter than you might think."],
            [
                "If a branch were just a label pointing at a commit, what would happen to that label when you make a new commit?",
                "Why might it help to keep an unfinished feature separate from the code everyone else relies on?",
            ],
            [
                "A git branch is a movable pointer to a commit.",
                "When you commit on a branch, the pointer moves forward to the new commit.",
                "Branches let you develop features in isolation and merge them when they are ready.",
            ],
        ),
    ),
    T(
        "git_merge_vs_rebase",
        "programming",
        ja=U(
            [
                "mergeとrebaseの違いは？",
                "rebaseすると履歴はどうなりますか？",
                "共有ブランチでrebaseしない理由は？",
            ],
            ["どちらも変更を取り込む方法です。"],
            [
                "履歴を合流させるのと一直線にするのでは、見た目はどう違うでしょうか？",
                "他人が取得済みのコミットを作り直すと、何が起きるでしょうか？",
            ],
            [
                "mergeは2つの履歴を合流させます。",
                "rebaseはコミットを付け替えて一直線にします。",
                "共有済みの履歴をrebaseすると食い違いが起きます。",
            ],
        ),
    ),
    T(
        "unit_testing",
        "programming",
        en=U(
            [
                "What is a unit test?",
                "Why should I write tests for my code?",
                "How do I test a function with pytest?",
            ],
            ["A unit test checks one small piece of code in isolation."],
            [
                "If you changed a function next month, how would you quickly know you had not broken what it used to do?",
                "For a function that adds two numbers, what inputs and expected outputs would you check first?",
            ],
            [
                "A unit test checks that a small unit of code, such as one function, behaves as expected.",
                "With pytest, you write functions whose names start with test_ and use plain assert statements.",
                "Tests catch regressions when code changes and document the intended behaviour.",
            ],
        ),
        ja=U(
            [
                "ユニットテストとは何ですか？",
                "テストを書く意味はありますか？",
                "pytestでのテストの書き方は？",
            ],
            ["小さな部品を単独で確かめるものです。"],
            [
                "関数を直したとき、壊していないとどう確かめますか？",
                "足し算の関数なら、まずどんな入力を確かめますか？",
            ],
            [
                "関数など小さな単位の動作を確かめるテストです。",
                "pytestではassertで結果を確かめます。",
                "変更で動作が壊れたことをすぐ検出できます。",
            ],
        ),
    ),
    T(
        "exceptions",
        "programming",
        en=U(
            [
                "How do exceptions work in Python?",
                "When should I use try and except?",
                "Is it bad to catch every exception with a bare except?",
            ],
            [
                "An exception interrupts the normal flow and travels up the call stack until something handles it."
            ],
            [
                "If you catch every possible exception, what might happen to a bug you never expected?",
                "Which specific error would you expect from int('abc'), and what should your program do about it?",
            ],
            [
                "An exception signals an error and stops normal execution until a matching except block handles it.",
                "You should catch specific exceptions, such as ValueError, that you know how to handle.",
                "A bare except hides unexpected bugs and even catches KeyboardInterrupt.",
            ],
        ),
    ),
    T(
        "async_io",
        "programming",
        en=U(
            [
                "What is async programming in Python?",
                "When does asyncio actually make my code faster?",
                "What does await do?",
            ],
            ["Think about what a program does while it waits for a network response."],
            [
                "While one request is waiting on the network, what could the program be doing instead of sitting idle?",
                "Would running a CPU-heavy calculation with async make it faster, given there is no waiting involved?",
            ],
            [
                "Async programming lets one thread run many tasks by switching between them while they wait for I/O.",
                "The await keyword pauses a coroutine until its result is ready, letting the event loop run other tasks.",
                "Async speeds up I/O-bound work such as network calls, but not CPU-bound computation.",
            ],
        ),
        ja=U(
            ["非同期処理とは何ですか？", "asyncioで速くなるのはいつ？", "awaitは何をしますか？"],
            ["通信の応答を待つ時間に注目しましょう。"],
            [
                "応答を待つ間、プログラムは他に何ができるでしょうか？",
                "待ち時間のない重い計算は、非同期で速くなるでしょうか？",
            ],
            [
                "待ち時間に別のタスクへ切り替える方法です。",
                "awaitは結果が出るまで処理を中断します。",
                "通信は速くなりますが、計算は速くなりません。",
            ],
        ),
    ),
    T(
        "sql_joins",
        "programming",
        en=U(
            [
                "What is the difference between INNER JOIN and LEFT JOIN?",
                "Why did my SQL join drop some rows?",
                "How do SQL joins work?",
            ],
            ["Picture two tables and ask what happens to rows that have no match."],
            [
                "If a customer has no orders, should they appear in the result, and which join would keep them?",
                "When you join customers to orders, what do you think fills the order columns for customers who never ordered?",
            ],
            [
                "A join combines rows from two tables based on a matching condition.",
                "INNER JOIN returns only the rows that match in both tables.",
                "LEFT JOIN returns every row from the left table, with NULLs where the right table has no match.",
            ],
        ),
        ja=U(
            ["INNER JOINとLEFT JOINの違いは？", "JOINで行が減ったのはなぜ？", "SQLのJOINの仕組みは？"],
            ["一致する行がない場合を考えましょう。"],
            [
                "注文のない顧客を残すには、どのJOINを使うでしょうか？",
                "注文のない顧客の注文列には、何が入ると思いますか？",
            ],
            [
                "JOINは条件に合う行同士で表を結合します。",
                "INNER JOINは一致する行だけ返します。",
                "LEFT JOINは左の行をすべて残します。",
            ],
        ),
    ),
    T(
        "slow_python_loops",
        "programming",
        en=U(
            [
                "Why does my Python loop run slowly?",
                "How can I speed up a for loop over a million numbers?",
                "Why is NumPy so much faster than a Python loop?",
            ],
            ["Every iteration of a Python loop goes through the interpreter, one object at a time."],
            [
                "Where do you think the time goes when Python handles each number as a separate object on every iteration?",
                "If the whole loop ran in compiled code over an entire array at once, how would that change the cost?",
            ],
            [
                "Python loops are slow because each iteration runs through the interpreter and handles boxed objects.",
                "Vectorised NumPy operations run the loop in compiled C code over a contiguous array.",
                "Built-in functions, comprehensions and better algorithms also help, and profiling shows where time goes.",
            ],
        ),
    ),
    T(
        "hash_tables",
        "programming",
        en=U(
            [
                "Why is looking up a key in a dictionary so fast?",
                "How does a hash table work?",
                "Should I check membership in a list or a set?",
            ],
            ["A hash function turns a key into a number that points to where it is stored."],
            [
                "If you could compute where an item lives directly from its key, would you still need to scan every item?",
                "In the worst case, how many elements would you check to find a value in an unsorted list of a million items?",
            ],
            [
                "Dictionaries and sets are hash tables, which hash each key to find its slot directly.",
                "Lookups take constant time on average, while searching a list takes linear time.",
                "For many membership checks, a set is much faster than a list.",
            ],
        ),
    ),
    T(
        "mutable_default_args",
        "programming",
        en=U(
            [
                "Why does my Python function remember values between calls?",
                "What is wrong with def f(items=[])?",
                "Why are mutable default arguments dangerous?",
            ],
            ["Default values are evaluated once, when the function is defined."],
            [
                "If the default list is created only once, what happens to it when one call appends an item?",
                "How could you use None as the default so that every call gets a fresh list?",
            ],
            [
                "Python evaluates default arguments once, when the function is defined, not on each call.",
                "A mutable default such as a list is therefore shared between calls and keeps its changes.",
                "The usual fix is to default to None and create a new list inside the function.",
            ],
        ),
    ),
    T(
        "virtual_environments",
        "programming",
        ja=U(
            ["Pythonの仮想環境とは？", "venvを使う理由は何ですか？", "ライブラリの版を分けるには？"],
            ["同じライブラリの別の版が必要な場面を考えましょう。"],
            [
                "全プロジェクトで同じ場所に入れると、版が衝突したらどうなるでしょうか？",
                "プロジェクトごとに入れ場所を分けると、何が防げるでしょうか？",
            ],
            [
                "プロジェクトごとに独立したパッケージ環境です。",
                "python -m venv .venvで作成します。",
                "ライブラリの版の衝突を防げます。",
            ],
        ),
    ),
    T(
        "type_hints",
        "programming",
        en=U(
            [
                "What are type hints in Python?",
                "Do type hints make Python code faster?",
                "Why should I add type annotations to my code?",
            ],
            ["Python does not check annotations at runtime by itself."],
            [
                "If the interpreter ignores annotations when it runs your code, which tools do you think actually use them?",
                "How might writing def total(prices: list[float]) -> float help a reader or an editor before the code runs?",
            ],
            [
                "Type hints annotate the expected types of variables, parameters and return values.",
                "Python does not enforce them at runtime, and they do not make code faster.",
                "Tools such as mypy and code editors use type hints to catch bugs and improve autocompletion.",
            ],
        ),
    ),
    T(
        "binary_search",
        "programming",
        en=U(
            [
                "How does binary search work?",
                "Why does binary search need sorted data?",
                "Why is binary search O(log n)?",
            ],
            ["Think about how you find a word in a paper dictionary."],
            [
                "If you look at the middle of a sorted list and the target is smaller, which half can you throw away?",
                "How many times can you halve a list of a million items before only one is left?",
            ],
            [
                "Binary search finds a target in a sorted list by comparing it with the middle element and discarding half.",
                "It needs sorted data, because otherwise you cannot tell which half to discard.",
                "Each step halves the remaining range, so binary search takes O(log n) comparisons.",
            ],
        ),
        ja=U(
            ["二分探索の仕組みは？", "二分探索にソートが必要な理由は？", "二分探索が速い理由は？"],
            ["紙の辞書の引き方を思い出しましょう。"],
            [
                "真ん中より探す値が小さければ、どちらの半分を捨てられますか？",
                "100万件を半分にし続けると、何回で1件になるでしょうか？",
            ],
            [
                "真ん中と比べて範囲を半分ずつ絞る方法です。",
                "ソートされていないと捨てる側を決められません。",
                "範囲が毎回半分になるので計算量はO(log n)です。",
            ],
        ),
    ),
    T(
        "database_indexes",
        "programming",
        ja=U(
            [
                "インデックスとは何ですか？",
                "インデックスで速くなる理由は？",
                "インデックスは多いほどいいですか？",
            ],
            ["本の巻末の索引を思い出しましょう。"],
            [
                "索引のない本で言葉を探すと、何ページめくるでしょうか？",
                "追加のたびに索引も更新するなら、書き込みはどうなるでしょうか？",
            ],
            [
                "列の値から行をすばやく探すためのデータ構造です。",
                "全件を走査せずに目的の行を見つけられます。",
                "多すぎると書き込みが遅くなります。",
            ],
        ),
    ),
    T(
        "rest_apis",
        "programming",
        en=U(
            [
                "What is a REST API?",
                "What is the difference between GET and POST?",
                "How do HTTP methods map to actions in a REST API?",
            ],
            ["In REST, everything is a resource with its own URL."],
            [
                "If /users/42 names a user, which HTTP method would you use just to read it, and which to delete it?",
                "Why might it matter that a GET request should never change data on the server?",
            ],
            [
                "A REST API exposes resources at URLs and uses HTTP methods to act on them.",
                "GET reads a resource and should not change anything, while POST creates a resource or submits data.",
                "PUT or PATCH update a resource, and DELETE removes it.",
            ],
        ),
    ),
    T(
        "off_by_one",
        "programming",
        en=U(
            [
                "What is an off-by-one error?",
                "Why does my loop skip the last element?",
                "Why does range(1, 10) stop at 9?",
            ],
            ["Python ranges include the start but exclude the end."],
            [
                "How many numbers does range(0, 5) produce, and which one might you expect that is missing?",
                "If a list has n items, what is the index of the last one, and does your loop reach it?",
            ],
            [
                "An off-by-one error is a loop or index that goes one step too far or stops one step too early.",
                "In Python, range(a, b) includes a but stops before b, and list indices run from 0 to n - 1.",
                "For example, range(1, 10) yields 1 to 9, not 1 to 10.",
            ],
        ),
    ),
    T(
        "variable_scope",
        "programming",
        ja=U(
            [
                "グローバル変数とローカル変数の違いは？",
                "関数内の変更が外に反映されないのは？",
                "UnboundLocalErrorの原因は？",
            ],
            ["関数内で代入した名前はローカルになります。"],
            [
                "関数内で x = 1 と書くと、外のxは書き換わるでしょうか？",
                "代入の前に同じ名前を読むと、どの変数を探すでしょうか？",
            ],
            [
                "関数内で代入した変数はローカルです。",
                "外の変数を変えるにはglobal宣言が必要です。",
                "代入前の参照はUnboundLocalErrorになります。",
            ],
        ),
    ),
    T(
        "generators",
        "programming",
        en=U(
            [
                "What is a generator in Python?",
                "What does yield do?",
                "Why use a generator instead of returning a list?",
            ],
            ["A generator produces values one at a time, only when asked."],
            [
                "If you had to process a file with a billion lines, why might producing one line at a time beat building a list?",
                "What do you think happens to a function's local variables when it pauses at yield?",
            ],
            [
                "A generator is a function that uses yield to produce a sequence of values lazily.",
                "Each yield pauses the function and keeps its state until the next value is requested.",
                "Because values are produced on demand, generators use little memory for large or infinite sequences.",
            ],
        ),
    ),
    T(
        "race_conditions",
        "programming",
        en=U(
            [
                "What is a race condition?",
                "Why does my multithreaded counter give the wrong total?",
                "How do locks prevent race conditions?",
            ],
            ["Incrementing a counter is really three steps: read, add and write."],
            [
                "If two threads both read the value 5 before either writes back, what will the counter end up as?",
                "How could you make sure only one thread at a time runs the read, add and write steps?",
            ],
            [
                "A race condition occurs when the result depends on the unpredictable timing of threads using shared data.",
                "Two threads can read the same old value and overwrite each other's update, losing increments.",
                "A lock makes the update safe by letting only one thread run it at a time.",
            ],
        ),
    ),
    T(
        "stack_vs_queue",
        "programming",
        en=U(
            [
                "What is the difference between a stack and a queue?",
                "When should I use a queue instead of a stack?",
                "What does LIFO mean?",
            ],
            ["Think of a pile of plates compared with a line at a shop."],
            [
                "Which plate do you take from a pile, and which person is served first in a line?",
                "If you were handling print jobs in the order they arrived, which of the two structures would you choose?",
            ],
            [
                "A stack is last in, first out: the most recently added item is removed first.",
                "A queue is first in, first out: items leave in the order they arrived.",
                "Stacks suit undo history and function calls, while queues suit task scheduling and breadth-first search.",
            ],
        ),
    ),
    T(
        "regular_expressions",
        "programming",
        ja=U(
            [
                "正規表現とは何ですか？",
                "「.*」はどういう意味ですか？",
                "メールの形式を正規表現で確かめるには？",
            ],
            ["正規表現は文字列のパターンを表す記法です。"],
            [
                "「.」が任意の1文字、「*」が繰り返しなら、「.*」は何に一致しますか？",
                "「@の前後に文字がある」は、どう表せばよいでしょうか？",
            ],
            [
                "文字列のパターンを記号で表す記法です。",
                "「.*」は任意の文字の0回以上の繰り返しです。",
                "メールの完全な検証は難しく、簡単な形で確かめます。",
            ],
        ),
    ),
    # ---- data science -------------------------------------------------------------------------------
    T(
        "train_validation_split",
        "data_science",
        en=U(
            [
                "Why do we split data into training and validation sets?",
                "What is a validation set for?",
                "What is the difference between a validation set and a test set?",
            ],
            ["A model can look perfect on the very data it learned from."],
            [
                "If you graded students on the exact questions they practised, would the score show how well they understand?",
                "If you tune hyperparameters on the validation set many times, can it still give an unbiased final score?",
            ],
            [
                "The training set is used to fit the model, and the validation set to tune choices such as hyperparameters.",
                "A separate test set is kept untouched for a final, unbiased estimate of performance.",
                "Evaluating on training data alone overstates how well the model generalises.",
            ],
        ),
        ja=U(
            [
                "訓練用と検証用に分ける理由は？",
                "検証データは何に使いますか？",
                "検証データとテストデータの違いは？",
            ],
            ["学習したデータでは、モデルは良く見えがちです。"],
            [
                "練習と同じ問題でテストしたら、本当の実力がわかるでしょうか？",
                "検証データで何度も調整したら、その点数は公平でしょうか？",
            ],
            [
                "訓練データで学習し、検証データで調整します。",
                "テストデータは最後の評価まで使いません。",
                "訓練データだけの評価は性能を過大評価します。",
            ],
        ),
    ),
    T(
        "p_values",
        "data_science",
        en=U(
            [
                "What is a p-value?",
                "Does p < 0.05 mean my hypothesis is true?",
                "How should I interpret a p-value of 0.03?",
            ],
            ["A p-value is computed assuming the null hypothesis is true."],
            [
                "If there were really no effect, how surprising would it be to see data at least as extreme as yours?",
                "Does a small p-value give the probability that your hypothesis is true, or say something about the data under the null?",
            ],
            [
                "A p-value is the probability of results at least as extreme as those observed, assuming the null hypothesis is true.",
                "A p-value of 0.03 means such data would be fairly unusual if there were no effect.",
                "A p-value is not the probability that the hypothesis is true, and it says nothing about effect size.",
            ],
        ),
        ja=U(
            ["p値とは何ですか？", "p<0.05なら仮説は正しいですか？", "p値0.03はどう解釈しますか？"],
            ["p値は帰無仮説が正しいと仮定して計算します。"],
            [
                "本当に効果がないなら、今回のデータはどれほど珍しいでしょうか？",
                "p値が小さいことは、仮説が正しい確率を表すでしょうか？",
            ],
            [
                "帰無仮説の下で今回以上の結果が出る確率です。",
                "0.03なら、効果がなければ珍しいデータです。",
                "仮説が正しい確率ではありません。",
            ],
        ),
    ),
    T(
        "correlation_vs_causation",
        "data_science",
        en=U(
            [
                "What is the difference between correlation and causation?",
                "Ice cream sales and drownings rise together. Does ice cream cause drowning?",
                "How can I show that one variable causes another?",
            ],
            ["Look for a third factor that could drive both variables."],
            [
                "What hidden factor could make two things, like ice cream sales and drownings, rise together without one causing the other?",
                "If you could randomly assign who gets the treatment, how would that help rule out hidden causes?",
            ],
            [
                "Correlation means two variables move together; causation means one directly changes the other.",
                "A confounder, such as hot weather, can create a correlation without any causal link.",
                "Randomised experiments are the most reliable way to establish causation.",
            ],
        ),
        ja=U(
            [
                "相関と因果の違いは何ですか？",
                "アイスが売れると水難事故が増える？",
                "因果関係はどう示しますか？",
            ],
            ["両方に影響する第三の要因を探しましょう。"],
            [
                "アイスの売上と水難事故を、両方増やす要因は何でしょうか？",
                "処置をランダムに割り当てると、隠れた要因はどうなるでしょうか？",
            ],
            [
                "相関は共に動くこと、因果は原因と結果の関係です。",
                "気温などの交絡因子が相関を生みます。",
                "因果の確認にはランダム化比較試験が確実です。",
            ],
        ),
    ),
    T(
        "feature_scaling",
        "data_science",
        en=U(
            [
                "Why should I normalise my features?",
                "What is the difference between standardisation and min-max scaling?",
                "Does feature scaling matter for every model?",
            ],
            ["Imagine one feature measured as yearly income and another as age in years."],
            [
                "If income ranges in the tens of thousands and age only up to about 100, which would dominate a distance calculation?",
                "Would a decision tree, which splits on one feature at a time, care about the scale of that feature?",
            ],
            [
                "Normalisation puts features on comparable scales so that none dominates just because of its units.",
                "Min-max scaling maps values to a range such as 0 to 1; standardisation subtracts the mean and divides by the standard deviation.",
                "Distance-based and gradient-based models benefit, while tree models are largely unaffected.",
            ],
        ),
        ja=U(
            [
                "特徴量の正規化はなぜ必要ですか？",
                "標準化と最小最大スケーリングの違いは？",
                "決定木にスケーリングは必要ですか？",
            ],
            ["年収と年齢のように単位の違う特徴量を比べましょう。"],
            [
                "年収は数百万、年齢は100以下なら、距離ではどちらが効くでしょうか？",
                "1つずつ分岐する決定木は、スケールを気にするでしょうか？",
            ],
            [
                "特徴量の尺度をそろえる処理です。",
                "標準化は平均を引いて標準偏差で割ります。",
                "決定木はスケールの影響をほとんど受けません。",
            ],
        ),
    ),
    T(
        "ab_testing",
        "data_science",
        en=U(
            [
                "How does an A/B test work?",
                "How long should I run an A/B test?",
                "Why do we randomise users in an A/B test?",
            ],
            ["The two groups should differ in only one thing."],
            [
                "If users chose for themselves which version to see, what else besides the change might differ between the groups?",
                "How would you decide in advance how many users you need before you can trust a difference?",
            ],
            [
                "An A/B test randomly splits users into a control group and a treatment group that sees one change.",
                "Randomisation makes the groups comparable, so a difference in outcomes can be attributed to the change.",
                "The sample size should be fixed in advance with a power calculation, not by stopping when results look good.",
            ],
        ),
        ja=U(
            [
                "A/Bテストの仕組みは？",
                "A/Bテストの期間はどう決めますか？",
                "ユーザーをランダムに分ける理由は？",
            ],
            ["2群の違いは試す変更だけであるべきです。"],
            [
                "ユーザーが自分で版を選べたら、変更以外に何が違ってくるでしょうか？",
                "必要なユーザー数を、事前にどう決めればよいでしょうか？",
            ],
            [
                "ユーザーをランダムに2群に分けて比べる方法です。",
                "ランダム化で差を変更の効果とみなせます。",
                "サンプルサイズは事前に検出力分析で決めます。",
            ],
        ),
    ),
    T(
        "missing_data",
        "data_science",
        en=U(
            [
                "How should I handle missing data?",
                "Is it okay to just drop rows with missing values?",
                "What is imputation?",
            ],
            ["Start by asking why the values are missing."],
            [
                "If the people who skipped the income question tend to be high earners, what happens to your average when you drop them?",
                "What bias might you add by filling every gap with the mean?",
            ],
            [
                "Missing data can be handled by dropping rows, imputing values, or using models that accept missing values.",
                "Dropping rows is only safe when values are missing completely at random; otherwise it can bias results.",
                "Imputation fills gaps with estimates such as the mean, the median or a model's prediction.",
            ],
        ),
        ja=U(
            ["欠損値はどう扱いますか？", "欠損のある行は削除していいですか？", "欠損値の補完とは何ですか？"],
            ["まず、なぜ欠けているのかを考えましょう。"],
            [
                "無回答に高所得者が多いなら、削除すると平均はどうなるでしょうか？",
                "欠損を全部平均で埋めると、ばらつきはどう変わるでしょうか？",
            ],
            [
                "削除、補完、欠損を扱えるモデルなどで対処します。",
                "欠損がランダムでないと、削除で偏りが生じます。",
                "補完では平均値や予測値で埋めます。",
            ],
        ),
    ),
    T(
        "mean_vs_median",
        "data_science",
        en=U(
            [
                "When should I use the median instead of the mean?",
                "Why is the average salary higher than what most people earn?",
                "How do outliers affect the mean?",
            ],
            ["Imagine one billionaire walking into a small room of people."],
            [
                "If a billionaire joins a room of ten teachers, which changes more, the mean income or the median income?",
                "For a skewed variable like house prices, which summary better describes a typical value, and why?",
            ],
            [
                "The mean is the sum divided by the count, while the median is the middle value when the data are sorted.",
                "The mean is pulled by extreme values, so right-skewed data such as incomes have a mean above the median.",
                "The median is usually the better summary of a typical value for skewed data.",
            ],
        ),
    ),
    T(
        "standard_deviation",
        "data_science",
        ja=U(
            ["標準偏差とは何ですか？", "分散と標準偏差の違いは？", "標準偏差が大きいとは？"],
            ["平均からの離れ具合を考えましょう。"],
            [
                "平均点が同じ2クラスで散らばりが違うとき、どう数字にしますか？",
                "ずれを二乗して平均すると、単位はどう変わるでしょうか？",
            ],
            [
                "データの平均からの散らばりを表す指標です。",
                "分散の平方根が標準偏差です。",
                "元のデータと同じ単位なので解釈しやすいです。",
            ],
        ),
    ),
    T(
        "cross_validation",
        "data_science",
        en=U(
            [
                "What is cross-validation?",
                "How does k-fold cross-validation work?",
                "Why use cross-validation instead of a single validation split?",
            ],
            ["A single split might, by luck, be unusually easy or hard."],
            [
                "If you rotated which part of the data is held out and averaged the scores, how would that change your confidence?",
                "With five folds, how many times would the model be trained, and on how much of the data each time?",
            ],
            [
                "Cross-validation estimates performance by training and evaluating on several different splits of the data.",
                "In k-fold cross-validation the data is split into k parts, and each part serves once as the validation set.",
                "Averaging the scores over the folds gives a more stable estimate than a single split.",
            ],
        ),
    ),
    T(
        "precision_recall",
        "data_science",
        en=U(
            [
                "What is the difference between precision and recall?",
                "What is a confusion matrix?",
                "Why is accuracy misleading for my fraud classifier?",
            ],
            ["Separate the mistakes into false alarms and missed cases."],
            [
                "Of all the transactions your model flagged as fraud, what fraction would tell you how trustworthy its alarms are?",
                "If only 1% of transactions are fraud, what accuracy would a model get by always predicting 'not fraud'?",
            ],
            [
                "A confusion matrix counts true positives, false positives, true negatives and false negatives.",
                "Precision is true positives over all predicted positives; recall is true positives over all actual positives.",
                "With rare classes, accuracy can be high even when the model misses every positive case.",
            ],
        ),
        ja=U(
            ["適合率と再現率の違いは？", "混同行列とは何ですか？", "正解率が高いのに役に立たないのは？"],
            ["誤検知と見逃しを分けて考えましょう。"],
            [
                "不正と判定したうち本当に不正だった割合は、どちらの指標でしょうか？",
                "不正が1%なら、常に「正常」と答えると正解率は何%でしょうか？",
            ],
            [
                "混同行列は予測と正解の組を数えた表です。",
                "適合率は誤検知、再現率は見逃しの少なさです。",
                "陽性がまれだと、正解率は当てになりません。",
            ],
        ),
    ),
    T(
        "class_imbalance",
        "data_science",
        en=U(
            [
                "How do I handle imbalanced classes?",
                "My dataset is 99% negatives. What should I do?",
                "Should I oversample the minority class?",
            ],
            ["A model can score well by ignoring the rare class entirely."],
            [
                "If mistakes on the rare class cost more in the loss, how would the model's incentives change?",
                "Which metric would reveal that a model never predicts the rare class, even when its accuracy looks great?",
            ],
            [
                "Class imbalance means one class is much rarer than the others, which biases models toward the majority.",
                "Common fixes include class weights, oversampling the minority class or undersampling the majority.",
                "Metrics such as precision, recall and PR-AUC are more informative than accuracy.",
            ],
        ),
    ),
    T(
        "outliers",
        "data_science",
        ja=U(
            ["外れ値とは何ですか？", "外れ値は削除すべきですか？", "外れ値はどう見つけますか？"],
            ["入力ミスか、本物の珍しい値かを区別しましょう。"],
            [
                "身長が「1700cm」なら、珍しい人と間違いのどちらでしょうか？",
                "本物の極端な値を消すと、結論はどう変わるでしょうか？",
            ],
            [
                "他のデータから大きく離れた値です。",
                "箱ひげ図や四分位範囲を目安に見つけます。",
                "本物の値なら安易に削除すべきではありません。",
            ],
        ),
    ),
    T(
        "sample_size",
        "data_science",
        en=U(
            [
                "How big does my sample need to be?",
                "Why are results from small samples unreliable?",
                "What is statistical power?",
            ],
            ["Smaller samples give noisier estimates."],
            [
                "If ten coin flips gave seven heads, would you call the coin biased, and would a thousand flips change your mind?",
                "How would the size of the effect you want to detect change the number of people you need?",
            ],
            [
                "The required sample size depends on the effect size, the noise in the data, the significance level and the power.",
                "Power is the probability of detecting an effect if it really exists, and 80% is a common target.",
                "Small samples give noisy estimates, so real effects are easily missed or exaggerated.",
            ],
        ),
    ),
    T(
        "data_leakage",
        "data_science",
        en=U(
            [
                "What is data leakage?",
                "Why does my model score 99% in validation but fail in production?",
                "Should I scale my data before or after splitting it?",
            ],
            ["Ask whether any information from the validation data reached the model during training."],
            [
                "If you computed the scaling mean on the full dataset before splitting, what did training learn about validation rows?",
                "Would a feature that is only known after the outcome happens be available when the model makes real predictions?",
            ],
            [
                "Data leakage happens when information that would not be available at prediction time gets into training.",
                "Examples include fitting a scaler on all the data before splitting, or using features recorded after the outcome.",
                "Leakage makes validation scores look far better than real-world performance.",
            ],
        ),
        ja=U(
            [
                "データリークとは何ですか？",
                "検証で99%なのに本番でだめなのは？",
                "スケーリングは分割の前と後どちら？",
            ],
            ["検証データの情報が学習に漏れていないか確かめましょう。"],
            [
                "分割前に全データで平均を計算すると、何が学習に漏れるでしょうか？",
                "結果の後に記録される特徴量は、予測時に使えるでしょうか？",
            ],
            [
                "予測時に使えない情報が学習に混ざることです。",
                "分割前の全データでスケーラーを学習すると起こります。",
                "検証スコアが実力より良く見えてしまいます。",
            ],
        ),
    ),
    T(
        "confidence_intervals",
        "data_science",
        en=U(
            [
                "What is a confidence interval?",
                "What does a 95% confidence interval mean?",
                "Why is my confidence interval so wide?",
            ],
            ["The interval comes from a procedure you could repeat on many samples."],
            [
                "If you repeated the study many times and built an interval each time, what share should contain the true value?",
                "What would happen to the width of the interval if you collected four times as much data?",
            ],
            [
                "A confidence interval gives a range of plausible values for an unknown parameter.",
                "A 95% interval comes from a procedure that captures the true value in 95% of repeated samples.",
                "Intervals get narrower with more data; quadrupling the sample roughly halves the width.",
            ],
        ),
    ),
    T(
        "simpsons_paradox",
        "data_science",
        en=U(
            [
                "What is Simpson's paradox?",
                "How can a trend reverse when I combine groups?",
                "Why do aggregated results sometimes mislead?",
            ],
            ["The groups may have very different sizes and baseline rates."],
            [
                "If a treatment works better in both mild and severe cases but mostly severe patients got it, what might pooled numbers show?",
                "Which hidden variable would you check before trusting a trend in combined data?",
            ],
            [
                "Simpson's paradox is when a trend seen in every subgroup reverses or disappears when the groups are combined.",
                "It happens when a confounding variable is unevenly distributed across the groups.",
                "Analysing by subgroup, or adjusting for the confounder, reveals the true relationship.",
            ],
        ),
    ),
    T(
        "one_hot_encoding",
        "data_science",
        en=U(
            [
                "What is one-hot encoding?",
                "How do I feed categorical variables into a model?",
                "Why not just number my categories 1, 2 and 3?",
            ],
            ["Numbering categories makes the model think they have an order."],
            [
                "If red is 1, green is 2 and blue is 3, would a model treat blue as 'more' than red, and is that true?",
                "How could you represent a colour so that every category is equally far from every other?",
            ],
            [
                "One-hot encoding turns a categorical variable into binary columns, one for each category.",
                "Each row has a 1 in the column for its category and 0 in the others.",
                "Unlike integer codes, one-hot columns do not imply an order between categories.",
            ],
        ),
        ja=U(
            [
                "ワンホットエンコーディングとは？",
                "カテゴリ変数はどう入力しますか？",
                "カテゴリに番号を振ってはだめですか？",
            ],
            ["番号を振ると順序があるように見えます。"],
            [
                "赤=1、緑=2、青=3なら、青は赤より「大きい」のでしょうか？",
                "どのカテゴリ同士も等しく離すには、どう表せばよいでしょうか？",
            ],
            [
                "カテゴリごとに0と1の列を作る方法です。",
                "各行は自分のカテゴリの列だけが1です。",
                "番号と違い、存在しない順序を持ち込みません。",
            ],
        ),
    ),
    T(
        "histograms",
        "data_science",
        ja=U(
            [
                "ヒストグラムとは何ですか？",
                "ヒストグラムと棒グラフの違いは？",
                "ヒストグラムのビン数の決め方は？",
            ],
            ["数値を区間に分けて数えると考えましょう。"],
            [
                "年齢を10歳ごとに数えたら、グラフから何が読み取れるでしょうか？",
                "区間を極端に細かくすると、分布の見え方はどうなるでしょうか？",
            ],
            [
                "数値を区間に分け、各区間の件数を棒で表す図です。",
                "棒グラフと違い、分布の形を見るためのものです。",
                "ビンの数は何通りか試して決めます。",
            ],
        ),
    ),
    T(
        "bias_variance",
        "data_science",
        en=U(
            [
                "What is the bias-variance trade-off?",
                "Why does a more complex model not always do better?",
                "What is underfitting?",
            ],
            ["Errors can come from a model that is too simple or from one that is too sensitive."],
            [
                "If you fit a straight line to clearly curved data, what kind of error would you expect, and from a curve through every point?",
                "What happens to the error on new data as you keep increasing model complexity?",
            ],
            [
                "Bias is error from overly simple assumptions, and variance is error from sensitivity to the particular training data.",
                "Simple models tend to underfit with high bias, while very flexible models tend to overfit with high variance.",
                "The best model balances the two to minimise error on new data.",
            ],
        ),
    ),
    T(
        "linear_regression",
        "data_science",
        en=U(
            [
                "What is linear regression?",
                "How does linear regression find the best line?",
                "What does the slope in a regression tell me?",
            ],
            ["Each point sits some vertical distance away from any line you draw."],
            [
                "If you measured how far each point is from a candidate line, how might you combine those distances to score the line?",
                "If the slope for house size is 2,000, what happens to the predicted price when size grows by one unit?",
            ],
            [
                "Linear regression models a target as a weighted sum of input features plus an intercept.",
                "Ordinary least squares chooses the weights that minimise the sum of squared residuals.",
                "A slope is the expected change in the target for a one-unit increase in that feature, others held fixed.",
            ],
        ),
    ),
    T(
        "sampling_bias",
        "data_science",
        ja=U(
            ["サンプリングバイアスとは？", "アンケートが実態とずれる理由は？", "偏りのない標本の集め方は？"],
            ["誰がデータに含まれていないかを考えましょう。"],
            [
                "ネット調査だけだと、ネットを使わない人の声はどうなるでしょうか？",
                "対象者をランダムに選ぶと、偏りはどうなるでしょうか？",
            ],
            [
                "標本が母集団を代表していないことによる偏りです。",
                "ネット調査では、ネットを使わない人が抜けます。",
                "無作為抽出で偏りを減らせます。",
            ],
        ),
    ),
    T(
        "central_limit_theorem",
        "data_science",
        en=U(
            [
                "What is the central limit theorem?",
                "Why do sample means look normally distributed?",
                "Why is the central limit theorem so important in statistics?",
            ],
            ["Think about averages of many samples rather than single values."],
            [
                "If you rolled a die thirty times and recorded the average, then repeated that a thousand times, what shape would the averages make?",
                "Why would it matter for confidence intervals that sample means behave predictably even when the data are skewed?",
            ],
            [
                "The central limit theorem says the mean of many independent samples is approximately normally distributed.",
                "This holds for most distributions with finite variance, once the sample size is large enough.",
                "The theorem justifies normal-based confidence intervals and tests for means.",
            ],
        ),
    ),
]


# ---------------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------------

Record = dict[str, str]


def join(lang: str, parts: list[str]) -> str:
    return ("" if lang == "ja" else " ").join(parts)


def size(lang: str, text: str) -> int:
    """Length in words (English) or characters (Japanese)."""
    return len(text) if lang == "ja" else len(text.split())


def chosen_variants(lang: str, unit: Unit, rng: random.Random) -> list[str]:
    """English: hint + question, question alone. Japanese: hint + question, and two subject leads +
    question (``{s}`` is filled in per prompt by :func:`compose_unit`). Within the length limit, counting
    ``{s}`` as a five-character subject. Where long hints or subjects leave too few, acknowledgement +
    question (English) or the question alone (Japanese) fill in. Hints and subject leads name what the
    learner asked about; a generic acknowledgement does not, and SmolLM2-135M trained on many of them
    learned to ask generic questions."""
    out: list[str] = []
    fallback: list[str] = []
    for q in unit.questions:
        out.extend(join(lang, [h, q]) for h in unit.hints)
        if lang == "ja":
            out.extend(join(lang, [lead, q]) for lead in rng.sample(SUBJECT_LEADS_JA, 2))
            fallback.append(q)
        else:
            out.append(q)
            fallback.append(join(lang, [rng.choice(ACKS_EN), q]))
    fits = [c for c in out if size(lang, c.replace("{s}", "主題主題主")) <= MAX_CHOSEN[lang]]
    if len(fits) < len(unit.prompts) + 1:
        fits += [c for c in fallback if size(lang, c) <= MAX_CHOSEN[lang]]
    return fits


def with_subject(lang: str, chosen: str, prompt: str) -> str:
    """``chosen`` with the prompt's subject in its lead; without the lead where the subject makes it too
    long (every lead is one sentence ending in 。)."""
    if "{s}" not in chosen:
        return chosen
    filled = chosen.replace("{s}", subject(prompt))
    return filled if size(lang, filled) <= MAX_CHOSEN[lang] else chosen.split("。", 1)[1]


def subject(prompt: str) -> str:
    """The learner's subject in a Japanese prompt: its first run of nouns and ASCII words (学習率, p値,
    サードパーティCookie), found with MeCab (fugashi + unidic-lite)."""
    import fugashi

    words: list[str] = []
    for w in fugashi.Tagger()(prompt):
        if w.feature.pos1 in ("名詞", "接尾辞") or (w.surface.isascii() and w.surface.isalnum()):
            words.append(w.surface)
        elif words:
            break
    return "".join(words)


def rejected_variants(lang: str, unit: Unit, rng: random.Random) -> list[str]:
    """Two or three plain declarative sentences built from the facts; within the length limit."""
    f = unit.facts
    out = [
        join(lang, [f[0], f[1]]),
        join(lang, [f[0], f[2]]),
        join(lang, [f[0], f[1], f[2]]),
        join(lang, [rng.choice(OPENERS[lang]), f[0], f[1]]),
        join(lang, [rng.choice(OPENERS[lang]), f[0], f[2]]),
    ]
    return [r for r in out if size(lang, r) <= MAX_REJECTED[lang]]


def ratio(lang: str, chosen: str, rejected: str) -> float:
    return size(lang, rejected) / size(lang, chosen)


def compose_unit(topic: Topic, lang: str, unit: Unit, rng: random.Random) -> list[Record]:
    """One pair per learner prompt, with distinct chosen replies (and, where possible, rejected ones).

    The chosen replies are sampled at random (among those that some rejected reply can match within
    LENGTH_RATIO); the rejected replies are then assigned so that each is about TARGET_RATIO times as long
    as its chosen reply.
    """
    n = len(unit.prompts)
    rejected_pool = rejected_variants(lang, unit, rng)
    chosen_pool = [
        c
        for c in chosen_variants(lang, unit, rng)
        if any(LENGTH_RATIO[0] <= ratio(lang, c, r) <= LENGTH_RATIO[1] for r in rejected_pool)
    ]
    if len(chosen_pool) < n or len(rejected_pool) < 2:
        raise DataError([f"{topic.key}/{lang}: too few chosen/rejected variants within the length limits"])
    rng.shuffle(rejected_pool)
    # distinct rejected replies where the unit has enough short ones; else one may serve two prompts
    candidates = list(
        itertools.permutations(rejected_pool, n)
        if len(rejected_pool) >= n
        else itertools.product(rejected_pool, repeat=n)
    )
    for _ in range(100):  # resample the chosen replies until every one of them can be matched
        chosen = [
            with_subject(lang, c, p) for p, c in zip(unit.prompts, rng.sample(chosen_pool, n), strict=True)
        ]
        options = [
            rs
            for rs in candidates
            if all(
                LENGTH_RATIO[0] <= ratio(lang, c, r) <= LENGTH_RATIO[1]
                for c, r in zip(chosen, rs, strict=True)
            )
        ]
        if options:
            break
    else:
        raise DataError([f"{topic.key}/{lang}: cannot match chosen and rejected lengths"])
    rejected = min(
        options,
        key=lambda rs: sum(
            abs(math.log(ratio(lang, c, r) / TARGET_RATIO)) for c, r in zip(chosen, rs, strict=True)
        ),
    )
    return [
        {"prompt": p, "chosen": c, "rejected": r, "lang": lang, "domain": topic.domain, "topic": topic.key}
        for p, c, r in zip(unit.prompts, chosen, rejected, strict=True)
    ]


def pick_test_topics(rng: random.Random) -> set[str]:
    """Per domain: one bilingual topic, one Japanese-only topic, then English-only topics up to the target."""
    chosen: set[str] = set()
    for domain in DOMAINS:
        topics = [t for t in TOPICS if t.domain == domain]
        rng.shuffle(topics)
        bilingual = [t for t in topics if t.en and t.ja]
        ja_only = [t for t in topics if t.ja and not t.en]
        en_only = [t for t in topics if t.en and not t.ja]
        picked = [bilingual[0], ja_only[0]]
        count = sum(len(u.prompts) for t in picked for _, u in t.units())
        for t in en_only:
            if count >= TEST_PER_DOMAIN:
                break
            picked.append(t)
            count += len(t.en.prompts) if t.en else 0
        chosen.update(t.key for t in picked)
    return chosen


def build() -> tuple[list[Record], list[Record]]:
    """Compose, split by topic, shuffle and validate; returns (train, test)."""
    rng = random.Random(SEED)
    test_topics = pick_test_topics(rng)
    train: list[Record] = []
    test: list[Record] = []
    for topic in TOPICS:
        for lang, unit in topic.units():
            records = compose_unit(topic, lang, unit, rng)
            (test if topic.key in test_topics else train).extend(records)
    rng.shuffle(train)
    rng.shuffle(test)
    validate(train, test)
    return train, test


# ---------------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------------


class DataError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("tutor data invariants broken:\n  " + "\n  ".join(problems))
        self.problems = problems


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？]")
_LATIN = re.compile(r"[A-Za-z]")


def sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(text))


def normalise(prompt: str) -> str:
    return re.sub(r"[\W_]+", "", prompt.lower())


def check_source() -> list[str]:
    """Checks on the hand-written content itself."""
    problems: list[str] = []
    keys = [t.key for t in TOPICS]
    problems += [f"duplicate topic key {k}" for k, n in Counter(keys).items() if n > 1]
    for t in TOPICS:
        if t.domain not in DOMAINS:
            problems.append(f"{t.key}: unknown domain {t.domain}")
        if not t.units():
            problems.append(f"{t.key}: no content")
        for lang, u in t.units():
            where = f"{t.key}/{lang}"
            mark = "？" if lang == "ja" else "?"
            if len(u.prompts) < 3 or not u.hints or len(u.questions) < 2 or len(u.facts) != 3:
                problems.append(f"{where}: needs >=3 prompts, >=1 hint, >=2 questions and exactly 3 facts")
            problems += [
                f"{where}: question does not end with {mark}: {q}"
                for q in u.questions
                if not q.endswith(mark)
            ]
            problems += [
                f"{where}: question must be one sentence: {q}" for q in u.questions if sentences(q) != 1
            ]
            problems += [
                f"{where}: hint must be one plain sentence: {h}"
                for h in u.hints
                if sentences(h) != 1 or "?" in h or "？" in h
            ]
            problems += [
                f"{where}: fact must be one plain sentence: {f}"
                for f in u.facts
                if sentences(f) != 1 or "?" in f or "？" in f
            ]
            problems += [
                f"{where}: prompt too long: {p}" for p in u.prompts if size(lang, p) > MAX_PROMPT[lang]
            ]
            if lang == "ja":
                problems += [
                    f"{where}: Japanese fact not in です/ます style: {f}"
                    for f in u.facts
                    if not re.search(r"(です|ます|ません)。$", f)
                ]
            else:
                texts = u.prompts + u.hints + u.questions + u.facts
                problems += [
                    f"{where}: non-ASCII text in English content: {s}" for s in texts if not s.isascii()
                ]
    return problems


def check_records(split: str, records: list[Record]) -> list[str]:
    problems: list[str] = []
    for i, r in enumerate(records):
        lang, where = r["lang"], f"{split}[{i}] {r['topic']}/{r['lang']}"
        mark = "？" if lang == "ja" else "?"
        if lang not in LANGS or r["domain"] not in DOMAINS:
            problems.append(f"{where}: bad lang/domain")
        if not r["chosen"].endswith(mark):
            problems.append(f"{where}: chosen does not end with {mark}")
        if "?" in r["rejected"] or "？" in r["rejected"]:
            problems.append(f"{where}: rejected contains a question mark")
        if not 1 <= sentences(r["chosen"]) <= 2:
            problems.append(f"{where}: chosen must be 1-2 sentences")
        if not 2 <= sentences(r["rejected"]) <= 3:
            problems.append(f"{where}: rejected must be 2-3 sentences")
        c, rj = size(lang, r["chosen"]), size(lang, r["rejected"])
        if c > MAX_CHOSEN[lang] or rj > MAX_REJECTED[lang] or size(lang, r["prompt"]) > MAX_PROMPT[lang]:
            problems.append(f"{where}: too long")
        if not LENGTH_RATIO[0] <= rj / c <= LENGTH_RATIO[1]:
            problems.append(f"{where}: rejected/chosen length ratio {rj / c:.2f} out of {LENGTH_RATIO}")
        if r["chosen"] == r["rejected"]:
            problems.append(f"{where}: chosen == rejected")
    dupes = [p for p, n in Counter(normalise(r["prompt"]) for r in records).items() if n > 1]
    problems += [f"{split}: duplicate prompt {p}" for p in dupes]
    return problems


def counts(records: list[Record]) -> Counter[tuple[str, str]]:
    return Counter((r["lang"], r["domain"]) for r in records)


def validate(train: list[Record], test: list[Record]) -> None:
    problems = check_source()
    problems += check_records("train", train) + check_records("test", test)
    train_topics = {r["topic"] for r in train}
    test_topics = {r["topic"] for r in test}
    problems += [f"topic {t} in both splits" for t in sorted(train_topics & test_topics)]
    train_prompts = {normalise(r["prompt"]) for r in train}
    problems += [
        f"test prompt also in train: {r['prompt']}" for r in test if normalise(r["prompt"]) in train_prompts
    ]
    total, ja = len(train) + len(test), sum(r["lang"] == "ja" for r in train + test)
    test_ja = sum(r["lang"] == "ja" for r in test)
    if total < MIN_TOTAL:
        problems.append(f"only {total} pairs (need >= {MIN_TOTAL})")
    if ja < MIN_JA:
        problems.append(f"only {ja} Japanese pairs (need >= {MIN_JA})")
    if len(train) < MIN_TRAIN:
        problems.append(f"only {len(train)} train pairs (need >= {MIN_TRAIN})")
    if not TEST_RANGE[0] <= len(test) <= TEST_RANGE[1]:
        problems.append(f"{len(test)} test pairs (need {TEST_RANGE[0]}-{TEST_RANGE[1]})")
    if test_ja < MIN_TEST_JA:
        problems.append(f"only {test_ja} Japanese test pairs (need >= {MIN_TEST_JA})")
    for split, records in (("train", train), ("test", test)):
        c = counts(records)
        problems += [f"{split}: no {lang}/{d} pairs" for lang in LANGS for d in DOMAINS if c[lang, d] == 0]
    if problems:
        raise DataError(problems)


# ---------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------

FIELDS = ("prompt", "chosen", "rejected", "lang", "domain", "topic")


def render(records: list[Record]) -> str:
    return "".join(json.dumps({k: r[k] for k in FIELDS}, ensure_ascii=False) + "\n" for r in records)


def outputs() -> dict[str, str]:
    """File name -> exact file content."""
    train, test = build()
    return {TRAIN_FILE: render(train), TEST_FILE: render(test)}


def summary(train: list[Record], test: list[Record]) -> str:
    lines = []
    for split, records in (("train", train), ("test", test)):
        c = counts(records)
        by_lang = ", ".join(f"{lang} {sum(c[lang, d] for d in DOMAINS)}" for lang in LANGS)
        lines.append(
            f"{split}: {len(records)} pairs ({by_lang}), {len({r['topic'] for r in records})} topics"
        )
        for lang in LANGS:
            lines.append(f"  {lang}: " + ", ".join(f"{d} {c[lang, d]}" for d in DOMAINS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="verify the committed files; write nothing")
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR, help="where the .jsonl files go")
    args = parser.parse_args(argv)
    try:
        files = outputs()
    except DataError as err:
        print(err, file=sys.stderr)
        return 2
    if args.check:
        stale = [
            n
            for n, text in files.items()
            if not (args.out_dir / n).is_file() or (args.out_dir / n).read_bytes() != text.encode("utf-8")
        ]
        if stale:
            print(f"out of date: {', '.join(stale)}; run python scripts/make_tutor_data.py", file=sys.stderr)
            return 1
        print("tutor data up to date")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out_dir / name).write_bytes(text.encode("utf-8"))
    train, test = build()
    print(summary(train, test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
