import React from "react";

// One conversation: the judged speaker's messages highlighted and named, the partner's grey.
export function Conversation({ turns, speaker, side }) {
  return (
    <div className={"conversation conversation-" + side} id={side + "-conversation"}>
      <h4>
        Conversation with <span className={"speaker-name speaker-" + side}>{speaker}</span>
      </h4>
      {turns.map((turn, i) => (
        <div key={i} className={"turn turn-" + turn.role + " turn-" + side + "-" + turn.role} data-role={turn.role}>
          <span className="turn-who">{turn.role === "speaker" ? speaker : "Partner"}:</span> {turn.text}
        </div>
      ))}
    </div>
  );
}
