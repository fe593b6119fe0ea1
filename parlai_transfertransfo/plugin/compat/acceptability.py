"""Patches `parlai.crowdsourcing.utils.acceptability`; the breakage is named in each docstring."""


def fix_offensive_language_download(acceptability):
    """ParlAI's `AcceptabilityChecker()` (model_chat's acceptability checks) builds an
    `OffensiveStringMatcher()` that downloads `OffensiveLanguage.txt` from parl.ai when a
    world starts: offline it fails, online it fetches at launch.  Use the word list
    packaged with this plugin (assets/offensive_words.txt) unless a path is given."""
    from parlai_transfertransfo.crowdsourcing.environment import OFFENSIVE_WORDS

    matcher = acceptability.OffensiveStringMatcher

    def packaged_matcher(datapath=None):
        return matcher(datapath if datapath else OFFENSIVE_WORDS)

    acceptability.OffensiveStringMatcher = packaged_matcher
