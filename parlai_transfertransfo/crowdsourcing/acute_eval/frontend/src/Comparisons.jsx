import React from "react";
import { Conversation } from "./Conversation.jsx";

function wordCount(text) {
  return text.trim().split(/\s+/).filter(Boolean).length;
}

// One comparison at a time: the two conversations, the question, two choices, a reason.
// The answers are kept until the last one, then submitted together.
export function Comparisons({ comparisons, onboarding, minReasonWords, onSubmit }) {
  const [index, setIndex] = React.useState(0);
  const [judgments, setJudgments] = React.useState([]);
  const [choice, setChoice] = React.useState(null);
  const [reason, setReason] = React.useState("");
  const [error, setError] = React.useState(null);
  const [shownAt, setShownAt] = React.useState(Date.now());
  const [sent, setSent] = React.useState(false);
  const comparison = comparisons[index];
  const last = index === comparisons.length - 1;

  function next() {
    if (choice === null) return setError("Please choose one of the two speakers.");
    const words = wordCount(reason);
    if (words < minReasonWords) {
      return setError(`Please say why in at least ${minReasonWords} words: your reason has ${words}.`);
    }
    const judgment = { id: comparison.id, choice, reason: reason.trim(), seconds: (Date.now() - shownAt) / 1000 };
    const all = [...judgments, judgment];
    setError(null);
    if (last) {
      setSent(true);
      onSubmit(all);
      return;
    }
    setJudgments(all);
    setIndex(index + 1);
    setChoice(null);
    setReason("");
    setShownAt(Date.now());
    window.scrollTo(0, 0);
  }

  return (
    <div id="comparison" data-index={index} data-comparison-id={comparison.id} data-onboarding={onboarding ? "yes" : "no"}>
      <p className="text-muted" id="progress">
        {onboarding ? "Practice comparison" : "Comparison"} {index + 1} of {comparisons.length}
      </p>
      <div className="row">
        <div className="col-xs-6">
          <Conversation turns={comparison.left} speaker="Speaker 1" side="left" />
        </div>
        <div className="col-xs-6">
          <Conversation turns={comparison.right} speaker="Speaker 2" side="right" />
        </div>
      </div>
      <div className="panel panel-default question-panel">
        <div className="panel-body">
          <p id="question"><b>{comparison.question}</b></p>
          {comparison.choices.map((text, i) => (
            <div className="radio" key={i}>
              <label>
                <input type="radio" name="choice" value={i + 1} checked={choice === i + 1} disabled={sent} onChange={() => setChoice(i + 1)} /> {text}
              </label>
            </div>
          ))}
          <label htmlFor="reason">Why? (in your own words)</label>
          <textarea className="form-control" id="reason" rows="2" value={reason} disabled={sent} onChange={(e) => setReason(e.target.value)} />
          <button className="btn btn-primary" id="next" disabled={sent} onClick={next}>
            {last ? "Submit" : "Next"}
          </button>
          {error ? <div className="alert alert-danger" id="comparison-error">{error}</div> : null}
        </div>
      </div>
    </div>
  );
}
