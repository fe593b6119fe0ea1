import React from "react";

function Scale({ question, value, onChange }) {
  const options = [];
  for (let v = question.min; v <= question.max; v++) options.push(v);
  return (
    <div className="form-group final-rating" id={"rating-" + question.key}>
      <p><b>{question.text}</b></p>
      {options.map((v) => (
        <label className="radio-inline" key={v}>
          <input type="radio" name={"rating-" + question.key} value={v} checked={value === v} onChange={() => onChange(v)} />{" "}
          {v}
          {question.labels && question.labels[String(v)] ? ` (${question.labels[String(v)]})` : ""}
        </label>
      ))}
    </div>
  );
}

// After the last turn: the ratings, then which of two personas the partner had.
export function FinalQuestions({ questions, active, onMessageSend }) {
  const [ratings, setRatings] = React.useState({});
  const [personaChoice, setPersonaChoice] = React.useState(null);
  const [error, setError] = React.useState(null);
  const [sent, setSent] = React.useState(false);

  function submit() {
    const missing = questions.ratings.filter((q) => ratings[q.key] === undefined);
    if (missing.length > 0 || (questions.persona_options && personaChoice === null)) {
      setError("Please answer every question.");
      return;
    }
    setSent(true);
    onMessageSend({ text: "", task_data: { final_answers: { ratings, persona_choice: personaChoice } } });
  }

  return (
    <div className="response-pane" id="final-questions">
      <p className="lead">The chat is over. Please answer these questions about your partner.</p>
      {questions.ratings.map((q) => (
        <Scale key={q.key} question={q} value={ratings[q.key]} onChange={(v) => setRatings({ ...ratings, [q.key]: v })} />
      ))}
      {questions.persona_options ? (
        <div className="form-group" id="persona-choice">
          <p><b>{questions.persona_question}</b></p>
          {questions.persona_options.map((persona, idx) => (
            <label className="persona-option" key={idx}>
              <input type="radio" name="persona-choice" value={idx} checked={personaChoice === idx} onChange={() => setPersonaChoice(idx)} />
              <ul>
                {persona.map((line, i) => (
                  <li key={i}>{line}</li>
                ))}
              </ul>
            </label>
          ))}
        </div>
      ) : null}
      <button className="btn btn-primary" id="submit-final" disabled={!active || sent} onClick={submit}>
        Submit
      </button>
      {error ? <div className="alert alert-danger" id="final-error">{error}</div> : null}
    </div>
  );
}
